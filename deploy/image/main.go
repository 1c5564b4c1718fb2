// Command image builds Conveyor's OCI image without a container engine and
// without pulling a base image: the static conveyor binary on an empty base,
// with the CA certificates of the build machine (for S3 and NATS over TLS),
// an /etc/passwd that names the non-root user it runs as, and nothing else.
// It writes an OCI image layout as one tar file, which registries and
// runtimes take as it is:
//
//	go run ./deploy/image -o conveyor-oci.tar
//	skopeo copy oci-archive:conveyor-oci.tar docker://registry.example/conveyor:v1.2.3
//	podman load -i conveyor-oci.tar
//
// The build is reproducible: every timestamp is SOURCE_DATE_EPOCH (default
// 0), file owners and modes are fixed, and the same tree, Go toolchain and
// CA bundle give the same image digest.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.Output, "o", "conveyor-oci.tar", "the OCI layout tar file to write")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the image: amd64 or arm64")
	flag.StringVar(&o.Version, "version", "", "version stamped into the binary and labels (default: git describe, else dev)")
	flag.StringVar(&o.Revision, "revision", "", "VCS revision for the label (default: git rev-parse HEAD)")
	flag.StringVar(&o.Source, "source", defaultSource, "source repository URL for the label")
	flag.StringVar(&o.CACerts, "ca-certs", defaultCACerts, "CA bundle to include (PEM)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected arguments %q; see 'go run ./deploy/image -h'\n", flag.Args())
		os.Exit(2)
	}
	ctx := context.Background()
	if o.Version == "" {
		o.Version = gitOr(ctx, "dev", "describe", "--tags", "--always", "--dirty")
	}
	if o.Revision == "" {
		o.Revision = gitOr(ctx, "unknown", "rev-parse", "HEAD")
	}
	epoch, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
	o.Created = epoch
	digest, err := build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s (linux/%s, conveyor %s)\n", o.Output, digest, o.Arch, o.Version)
}

// gitOr runs git with args in the current directory and returns its
// trimmed output, or def when git fails (no git, not a checkout).
func gitOr(ctx context.Context, def string, args ...string) string {
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	if s := strings.TrimSpace(string(out)); err == nil && s != "" {
		return s
	}
	return def
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org): the
// time every entry and the image config carry; 0 when unset.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a count of seconds since 1970; unset it or give one", v)
	}
	return time.Unix(n, 0).UTC(), nil
}
