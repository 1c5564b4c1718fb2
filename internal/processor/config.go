package processor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultTimeout is how long one attempt may run when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Minute

// defaultName is the built-in used when neither Name nor Command is set.
const defaultName = "report"

// Config selects and configures the processor a worker runs.
type Config struct {
	// Name is a built-in: "report" (default), "zstd" or "noop". It is
	// ignored when Command is set.
	Name string
	// Command is the argv of an external processor: an absolute path or a
	// name looked up on PATH, then its arguments. No shell is involved.
	Command []string
	// Timeout bounds one attempt; DefaultTimeout when zero. Must be positive.
	Timeout time.Duration
	// Env holds extra KEY=VALUE pairs for external processors. The CONVEYOR_*
	// contract variables are set by Conveyor and cannot be overridden.
	Env []string

	// Sandbox says whether external processors run in a bubblewrap
	// sandbox: SandboxAuto (the default, also when empty), SandboxRequired
	// or SandboxOff.
	// Built-ins run inside the worker and are never sandboxed.
	Sandbox string
	// Network lets a sandboxed processor use the network (it has none by
	// default).
	Network bool
	// Limits bounds an external processor's resources.
	Limits Limits
	// Hide lists absolute paths the sandboxed processor must not read
	// although they lie in a directory it sees (the worker's configuration
	// file, its data dir), beyond the usual secrets such as /etc/shadow.
	Hide []string
	// Bwrap is the bubblewrap executable; empty means "bwrap" on PATH.
	Bwrap string
}

// contractVars are set by Run for external processors; Config.Env may not
// set them.
var contractVars = []string{
	"CONVEYOR_INPUT", "CONVEYOR_OUTPUT_DIR", "CONVEYOR_WORK_DIR",
	"CONVEYOR_JOB_ID", "CONVEYOR_INPUT_BUCKET", "CONVEYOR_INPUT_KEY",
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Name == "" && len(c.Command) == 0 {
		c.Name = defaultName
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate reports the first problem with c, naming the field and what to do
// about it. Call it after WithDefaults. For an external processor it checks
// that the executable exists now; Run reports ErrNotFound if it disappears
// later.
func (c Config) Validate() error {
	if c.Timeout <= 0 {
		return fmt.Errorf("processor.timeout must be positive (got %s)", c.Timeout)
	}
	if err := c.validateSandbox(); err != nil {
		return err
	}
	if len(c.Command) == 0 {
		if !slices.Contains(Builtins(), c.Name) {
			return fmt.Errorf("processor.name %q is not a built-in; choose one of %s or set processor.command",
				c.Name, strings.Join(Builtins(), ", "))
		}
		return nil
	}
	for i, kv := range c.Env {
		key, _, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return fmt.Errorf("processor.env[%d]: %q is not KEY=VALUE", i, kv)
		}
		if slices.Contains(contractVars, key) {
			return fmt.Errorf("processor.env[%d]: %s is set by Conveyor for every job; remove it", i, key)
		}
	}
	_, err := c.resolveCommand()
	return err
}

// resolveCommand returns the absolute path of Command[0].
func (c Config) resolveCommand() (string, error) {
	name := c.Command[0]
	if name == "" {
		return "", errors.New("processor.command: the executable (first element) is empty; set a path or a name on PATH")
	}
	notFound := fmt.Errorf("processor.command: %q not found; install it or fix the path", name)
	if !strings.Contains(name, "/") {
		path, err := exec.LookPath(name)
		if err != nil {
			// Includes exec.ErrDot: a match through a relative PATH entry
			// would depend on the working directory, which is not ours.
			return "", notFound
		}
		if path, err = filepath.Abs(path); err != nil {
			return "", fmt.Errorf("processor.command: %q: %w", name, err)
		}
		return path, nil
	}
	if !filepath.IsAbs(name) {
		return "", fmt.Errorf("processor.command: %q is a relative path; use an absolute path or a bare name found on PATH", name)
	}
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", notFound
	case err != nil:
		return "", fmt.Errorf("processor.command: %w; fix the path or its permissions", err)
	case fi.IsDir():
		return "", fmt.Errorf("processor.command: %q is a directory; point it at the executable", name)
	case fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("processor.command: %q is not executable; chmod +x it or fix the path", name)
	}
	return name, nil
}
