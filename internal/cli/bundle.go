package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/conveyorhq/conveyor/internal/bundle"
	"github.com/conveyorhq/conveyor/internal/version"
)

// A processor bundle (processor.bundle) is a directory, or a .zip of one,
// holding the processor and what it needs (layout: internal/bundle). The
// processor is the bundle's `processor` file, or processor.command with
// its first element taken relative to the bundle. Either way the bundle
// runs from its own copy, <data_dir>/bundles/<sha256>/, as on the EC2
// worker, and its `setup` runs once per version on this machine, before
// any job.

// bundleStore is where this machine keeps unpacked bundles and setup stamps.
func (c FileConfig) bundleStore() bundle.Store {
	return bundle.Store{Root: filepath.Join(c.DataDir, "bundles")}
}

// bundleDir is where the bundle's files are once it is opened: the
// copy of its version under the bundle store.
func (c FileConfig) bundleDir() (string, error) {
	if c.bundleOpened != "" {
		return c.bundleOpened, nil
	}
	src := c.Processor.Bundle
	fi, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("processor.bundle: %w; point it at a bundle directory or a .zip of one", err)
	}
	sha := strings.ToLower(c.Processor.BundleSHA256)
	switch {
	case sha != "":
	case fi.IsDir():
		sha, err = bundle.HashDir(src)
	default:
		sha, err = bundle.HashFile(src)
	}
	if err != nil {
		return "", fmt.Errorf("processor.bundle: %w", err)
	}
	return filepath.Join(c.bundleStore().Root, sha), nil
}

// bundleCommand is the processor's argv inside the bundle at dir.
func (c FileConfig) bundleCommand(dir string) []string {
	argv := append([]string(nil), c.Processor.Command...)
	if len(argv) == 0 {
		argv = []string{bundle.ProcessorFile}
	}
	if !filepath.IsAbs(argv[0]) {
		argv[0] = filepath.Join(dir, argv[0])
	}
	return argv
}

// checkBundle checks what can be checked of a bundle before it is opened.
func (c FileConfig) checkBundle() error {
	if c.Processor.Bundle == "" {
		return nil
	}
	if c.Processor.Name != "" && c.Processor.Name != "report" && len(c.Processor.Command) == 0 {
		return usageErrorf("processor.name %q and processor.bundle are both set; a bundle runs its own processor: remove processor.name", c.Processor.Name)
	}
	if len(c.Processor.Command) > 0 {
		p := filepath.ToSlash(c.Processor.Command[0])
		if p == "" || filepath.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") {
			return usageErrorf("processor.command[0] %q must be a path inside processor.bundle (relative, no ..)", c.Processor.Command[0])
		}
	}
	if sha := c.Processor.BundleSHA256; sha != "" {
		if b, err := hex.DecodeString(sha); err != nil || len(b) != sha256.Size {
			return usageErrorf("processor.bundle_sha256 %q is not a SHA-256 (64 hex digits)", sha)
		}
	}
	if _, err := os.Stat(c.Processor.Bundle); err != nil {
		return usageErrorf("processor.bundle: %v; point it at a bundle directory or a .zip of one", err)
	}
	return nil
}

// versions are what job records name as their producers.
type versions struct {
	Config, Processor string
}

// prepareProcessor makes the configured processor ready to run and
// returns the versions job records will name. For a bundle it verifies,
// unpacks and sets it up (output to out); a setup that fails is an error
// that says the worker takes no jobs, and why.
func (c *FileConfig) prepareProcessor(ctx context.Context, out io.Writer) (versions, error) {
	v := versions{Config: c.configVersion()}
	switch {
	case c.Processor.Bundle != "":
		b, err := c.bundleStore().Open(ctx, c.Processor.Bundle, c.Processor.BundleSHA256, out)
		var se *bundle.SetupError
		if errors.As(err, &se) {
			return v, fmt.Errorf("processor bundle %s setup failed (exit %d): %s; taking no jobs. Its output is in %s; fix the bundle's setup and start again (a failed setup runs again at every start)",
				se.SHA256, se.ExitCode, se.LastLine, se.Log)
		}
		if err != nil {
			return v, err
		}
		v.Processor = b.Version()
		c.bundleOpened = b.Dir
	case len(c.Processor.Command) > 0:
		v.Processor = "command:" + strings.Join(c.Processor.Command, " ")
	default:
		v.Processor = "builtin:" + c.Processor.Name + "@" + version.Version
	}
	return v, nil
}

// configVersion is "sha256:<hex>" of the effective configuration (after
// the file, the environment and the flags), secrets left out: two workers
// with the same version run with the same settings.
func (c FileConfig) configVersion() string {
	c.S3.AccessKeyID, c.S3.SecretAccessKey, c.Dashboard.Token = "", "", ""
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // a struct of plain fields always marshals
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}
