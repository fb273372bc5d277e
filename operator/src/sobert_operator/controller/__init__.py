"""The kopf controller: `kopf run -m sobert_operator.controller.main`."""
