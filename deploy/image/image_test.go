package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// buildImage runs the builder as `go run ./deploy/image` does, into dir.
func buildImage(t *testing.T, dir string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	o := options{
		Output:   filepath.Join(dir, "conveyor-oci.tar"),
		Arch:     runtime.GOARCH,
		Version:  "v0.0.0-imagetest",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Source:   defaultSource,
		CACerts:  defaultCACerts,
		Created:  time.Unix(0, 0).UTC(),
	}
	if _, err := os.Stat(o.CACerts); err != nil {
		t.Fatalf("the build machine has no CA bundle at %s (apt-get install ca-certificates): %v", o.CACerts, err)
	}
	digest, err := build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return o.Output, digest.String()
}

// untar unpacks an archive of regular files and directories under dir.
func untar(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("archive entry %q escapes the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("archive entry %q has type %c, want files and directories only", h.Name, h.Typeflag)
		}
	}
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestImage builds the image twice and reads the tarball back with
// go-containerregistry as a runtime would: one linux image whose config
// runs `conveyor worker serve` as a non-root user, whose only layer holds
// exactly the expected files with their modes and owners, whose binary
// runs, and whose digest (and tar file) the second build reproduces.
func TestImage(t *testing.T) {
	tarPath, digest := buildImage(t, t.TempDir())
	tarPath2, digest2 := buildImage(t, t.TempDir())
	if digest != digest2 {
		t.Errorf("two builds of the same tree differ: %s and %s", digest, digest2)
	}
	if sha(t, tarPath) != sha(t, tarPath2) {
		t.Errorf("two builds wrote different tar files")
	}

	dir := t.TempDir()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	untar(t, f, dir)
	f.Close()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read the OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest.String() != digest || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index names %s (%s), want %s (%s)", desc.Digest, desc.MediaType, digest, types.OCIManifestSchema1)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "v0.0.0-imagetest" {
		t.Errorf("ref.name = %q", got)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/conveyor"}) || !slices.Equal(c.Cmd, []string{"worker", "serve"}) {
		t.Errorf("entrypoint %q cmd %q, want conveyor worker serve", c.Entrypoint, c.Cmd)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want the non-root 65532:65532", c.User)
	}
	for _, e := range []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "CONVEYOR_DATA_DIR=/var/lib/conveyor"} {
		if !slices.Contains(c.Env, e) {
			t.Errorf("env %q lacks %s", c.Env, e)
		}
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.source":   defaultSource,
		"org.opencontainers.image.version":  "v0.0.0-imagetest",
		"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
	} {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v, want the fixed epoch", cf.Created)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 (no base image)", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type meta struct {
		mode int64
		uid  int
	}
	want := map[string]meta{
		"etc/": {0o755, 0}, "etc/group": {0o644, 0}, "etc/passwd": {0o644, 0},
		"etc/ssl/": {0o755, 0}, "etc/ssl/certs/": {0o755, 0}, "etc/ssl/certs/ca-certificates.crt": {0o644, 0},
		"home/": {0o755, 0}, "home/nonroot/": {0o700, 65532}, "tmp/": {0o1777, 0},
		"usr/": {0o755, 0}, "usr/local/": {0o755, 0}, "usr/local/bin/": {0o755, 0}, "usr/local/bin/conveyor": {0o755, 0},
		"var/": {0o755, 0}, "var/lib/": {0o755, 0}, "var/lib/conveyor/": {0o700, 65532},
	}
	got := map[string]meta{}
	var exe, passwd, ca []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = meta{h.Mode, h.Uid}
		if h.Uid != h.Gid || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d time %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		b, _ := io.ReadAll(tr)
		switch h.Name {
		case "usr/local/bin/conveyor":
			exe = b
		case "etc/passwd":
			passwd = b
		case "etc/ssl/certs/ca-certificates.crt":
			ca = b
		}
	}
	for name, m := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("the layer lacks %s", name)
		} else if g != m {
			t.Errorf("%s: mode %o uid %d, want mode %o uid %d", name, g.mode, g.uid, m.mode, m.uid)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the layer holds an unexpected %s", name)
		}
	}
	if !bytes.Contains(passwd, []byte("\nnonroot:x:65532:65532:")) {
		t.Errorf("/etc/passwd does not name the image's user 65532:\n%s", passwd)
	}
	if !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("the CA bundle holds no certificate")
	}

	// The binary in the image runs, and is the one that was stamped.
	bin := filepath.Join(t.TempDir(), "conveyor")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("the image's conveyor does not run: %v", err)
	}
	var v struct {
		Version, OS, Arch string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if v.Version != "v0.0.0-imagetest" || v.OS != "linux" || v.Arch != runtime.GOARCH {
		t.Errorf("version -o json = %s", out)
	}
	// Static: no interpreter (dynamic loader) in the ELF header's program.
	if bytes.Contains(exe[:min(len(exe), 4096)], []byte("ld-linux")) {
		t.Errorf("the binary asks for a dynamic loader; it must be static (CGO_ENABLED=0)")
	}
}

func TestSourceDateEpoch(t *testing.T) {
	if got, err := sourceDateEpoch(""); err != nil || !got.Equal(time.Unix(0, 0)) {
		t.Errorf("unset: %v %v", got, err)
	}
	if got, err := sourceDateEpoch("1700000000"); err != nil || got.Unix() != 1700000000 {
		t.Errorf("1700000000: %v %v", got, err)
	}
	if _, err := sourceDateEpoch("yesterday"); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("yesterday: %v", err)
	}
}
