// Command seccomp-default prints the seccomp profile containerd gives a container whose pod asks
// for `seccompProfile: RuntimeDefault`: containerd v1.7's contrib/seccomp DefaultProfile, which
// the CRI plugin applies through WithDefaultProfile (pkg/cri/sbserver/container_create_linux.go).
// It reads the container's OCI runtime spec (config.json) on stdin, since the profile depends on
// the container's capabilities and architecture, and writes the spec's `linux.seccomp` on stdout.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	var spec specs.Spec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		fmt.Fprintf(os.Stderr, "seccomp-default: reading the runtime spec on stdin: %v\n", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(seccomp.DefaultProfile(&spec)); err != nil {
		fmt.Fprintf(os.Stderr, "seccomp-default: %v\n", err)
		os.Exit(1)
	}
}
