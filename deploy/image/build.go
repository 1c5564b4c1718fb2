package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts; the test and deploy/k8s rely on them.
const (
	defaultSource  = "https://github.com/conveyorhq/conveyor"
	defaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
	binaryPath     = "/usr/local/bin/conveyor"
	caPath         = "/etc/ssl/certs/ca-certificates.crt"
	dataDir        = "/var/lib/conveyor" // the worker's volume is mounted here
	uid            = 65532               // "nonroot", as distroless images name it
	user           = "65532:65532"
	modulePath     = "github.com/conveyorhq/conveyor"
)

type options struct {
	Output   string
	Arch     string
	Version  string
	Revision string
	Source   string
	CACerts  string
	Created  time.Time
	// ModuleDir is where the module is built from (default: the current
	// directory, which go run uses).
	ModuleDir string
}

// build compiles the static binary, assembles the image and writes the
// layout tar to o.Output; it returns the image's manifest digest.
func build(ctx context.Context, o options) (v1.Hash, error) {
	tmp, err := os.MkdirTemp("", "conveyor-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "conveyor")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X "+modulePath+"/internal/version.Version="+o.Version,
		"-o", bin, modulePath+"/cmd/conveyor")
	cmd.Dir = o.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return v1.Hash{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		return v1.Hash{}, err
	}
	ca, err := os.ReadFile(o.CACerts)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read the CA bundle: %w; install ca-certificates or pass -ca-certs FILE", err)
	}
	img, err := image(o, exe, ca)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := writeLayoutTar(img, o, filepath.Join(tmp, "layout")); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// entry is one file or directory of the image's only layer.
type entry struct {
	name string // without a leading slash
	mode int64
	uid  int
	body []byte // nil for a directory
}

// files is the whole root filesystem of the image.
func files(exe, ca []byte) []entry {
	dir := func(name string, mode int64, owner int) entry { return entry{name: name, mode: mode, uid: owner} }
	return []entry{
		dir("etc/", 0o755, 0),
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		dir("etc/ssl/", 0o755, 0),
		dir("etc/ssl/certs/", 0o755, 0),
		{name: caPath[1:], mode: 0o644, body: ca},
		dir("home/", 0o755, 0),
		dir("home/nonroot/", 0o700, uid),
		dir("tmp/", 0o1777, 0),
		dir("usr/", 0o755, 0),
		dir("usr/local/", 0o755, 0),
		dir("usr/local/bin/", 0o755, 0),
		{name: binaryPath[1:], mode: 0o755, body: exe},
		dir("var/", 0o755, 0),
		dir("var/lib/", 0o755, 0),
		dir(dataDir[1:]+"/", 0o700, uid),
	}
}

// layerTar is the uncompressed layer: entries in order, fixed owners,
// modes and times, no user or group names.
func layerTar(entries []entry, t time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: t, Format: tar.FormatPAX}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// image assembles the OCI image from the binary and the CA bundle.
func image(o options, exe, ca []byte) (v1.Image, error) {
	raw, err := layerTar(files(exe, ca), o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.Created}, CreatedBy: "go run ./deploy/image", Comment: "conveyor " + o.Version,
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = o.Arch, "linux"
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint: []string{binaryPath},
		Cmd:        []string{"worker", "serve"},
		User:       user,
		WorkingDir: dataDir,
		Env: []string{
			"PATH=/usr/local/bin",
			"SSL_CERT_FILE=" + caPath,
			"CONVEYOR_DATA_DIR=" + dataDir,
		},
		Labels: map[string]string{
			"org.opencontainers.image.source":   o.Source,
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.revision": o.Revision,
			"org.opencontainers.image.title":    "conveyor",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// writeLayoutTar writes img as an OCI image layout under dir, then packs
// dir into o.Output with sorted names, fixed times and owners.
func writeLayoutTar(img v1.Image, o options, dir string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.Version,
	})); err != nil {
		return err
	}
	var names []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && path != dir {
			names = append(names, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tmp := o.Output + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, path := range names {
		rel, _ := filepath.Rel(dir, path)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: o.Created, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, o.Output)
}
