package bundle_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conveyorhq/conveyor/internal/bundle"
)

// The deploying side packs a bundle directory and ships the archive with
// its SHA-256; the worker opens the archive it was given, which checks the
// hash, unpacks the version into its own directory and runs its setup
// once, then runs the processor from there.
func Example() {
	src, _ := os.MkdirTemp("", "bundle-src-")
	defer os.RemoveAll(src)
	os.WriteFile(filepath.Join(src, bundle.ProcessorFile), []byte("#!/bin/sh\necho processing \"$CONVEYOR_INPUT\"\n"), 0o755)

	// Deploy: pack, name by hash.
	var zip bytes.Buffer
	if err := bundle.Pack(src, &zip); err != nil {
		panic(err)
	}
	machine, _ := os.MkdirTemp("", "bundle-machine-")
	defer os.RemoveAll(machine)
	archive := filepath.Join(machine, "shipped.zip")
	os.WriteFile(archive, zip.Bytes(), 0o644)
	sha, _ := bundle.HashDir(src) // the same as the archive's SHA-256

	// Worker: open by hash before taking jobs.
	store := bundle.Store{Root: filepath.Join(machine, "bundles")}
	b, err := store.Open(context.Background(), archive, sha, os.Stdout)
	if err != nil {
		panic(err)
	}
	fmt.Println(b.Dir == filepath.Join(store.Root, sha), b.Version() == "bundle:sha256:"+sha)
	// Output: true true
}
