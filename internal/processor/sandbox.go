package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Values of Config.Sandbox.
const (
	// SandboxAuto runs external processors in a bubblewrap sandbox when
	// bwrap is installed and works, and without one otherwise (New's note
	// says so).
	SandboxAuto = "auto"
	// SandboxRequired makes New fail when no working bwrap is found.
	SandboxRequired = "required"
	// SandboxOff runs external processors without a sandbox.
	SandboxOff = "off"
)

// systemDirs are bound read-only into the sandbox, where they exist: the
// programs, libraries and configuration a processor needs. Nothing else of
// the machine is visible: not /home, /root, /var, /srv, /run or the data
// dir, where the worker keeps its credentials and other jobs' files.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// hiddenPaths are secrets inside systemDirs, covered with an empty file or
// directory in the sandbox. Config.Hide adds the worker's own.
var hiddenPaths = []string{
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
	"/etc/ssh", "/etc/ssl/private", "/etc/pki/tls/private", "/etc/conveyor",
}

// sandbox runs a processor under bubblewrap (bwrap): a read-only view of
// systemDirs and of the executable's directory, the job's input read-only,
// its output and work directories writable, a private /tmp, /dev and
// /proc, new PID, IPC and UTS namespaces (so the worker's processes, and
// through /proc its environment and files, are out of sight), no network
// unless allowed, no capabilities and no new privileges (bwrap sets
// PR_SET_NO_NEW_PRIVS). bwrap dies with the worker (--die-with-parent and
// the worker's parent-death signal), and the PID namespace dies with it.
type sandbox struct {
	bwrap   string // absolute path
	network bool
	hide    []string // Config.Hide
}

// args is the bwrap command line that runs path with argv (argv[0] is
// replaced by path) for env.
func (s *sandbox) args(env Env, path string, argv []string) []string {
	a := []string{s.bwrap,
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--die-with-parent", "--cap-drop", "ALL",
	}
	if !s.network {
		a = append(a, "--unshare-net")
	}
	visible := []string{}
	for _, d := range systemDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			// Merged /usr: /bin -> usr/bin stays a link, as on the host.
			if target, err := os.Readlink(d); err == nil {
				a = append(a, "--symlink", target, d)
				visible = append(visible, d) // as what it points to
			}
		case fi.IsDir():
			a = append(a, "--ro-bind", d, d)
			visible = append(visible, d)
		}
	}
	a = append(a, "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp")
	if s.network {
		// Where systemd-resolved runs, /etc/resolv.conf links here.
		if fi, err := os.Stat("/run/systemd/resolve"); err == nil && fi.IsDir() {
			a = append(a, "--ro-bind", "/run/systemd/resolve", "/run/systemd/resolve")
		}
	}
	// The executable's directory (and its target's, for a link): a script
	// may read files beside it.
	dirs := []string{filepath.Dir(path)}
	if real, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(real) != dirs[0] {
		dirs = append(dirs, filepath.Dir(real))
	}
	for _, d := range dirs {
		if !under(d, visible) {
			a = append(a, "--ro-bind", d, d)
			visible = append(visible, d)
		}
	}
	hidden := map[string]bool{}
	for _, h := range append(append([]string(nil), hiddenPaths...), s.hide...) {
		h = filepath.Clean(h)
		if hidden[h] || !under(h, visible) {
			continue // done, or not in the sandbox at all
		}
		hidden[h] = true
		fi, err := os.Stat(h)
		switch {
		case err != nil:
		case fi.IsDir():
			a = append(a, "--tmpfs", h)
		default:
			a = append(a, "--ro-bind", "/dev/null", h)
		}
	}
	a = append(a,
		"--ro-bind", env.Input, env.Input,
		"--bind", env.OutputDir, env.OutputDir,
		"--bind", env.WorkDir, env.WorkDir,
		"--chdir", env.WorkDir,
		// The sandbox's own root (where /root or /var would be made) is
		// read-only too: nothing is written but where the job may write.
		"--remount-ro", "/",
		"--", path)
	return append(a, argv[1:]...)
}

// under reports whether path is one of dirs or inside one.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// probes caches, per bwrap path, whether bubblewrap works on this machine.
var probes sync.Map // string -> *probe

type probe struct {
	once sync.Once
	err  error
}

// probeBwrap runs bwrap once with the namespaces the sandbox uses: bwrap
// may be installed but unusable (no user namespaces for an unprivileged
// worker, a container without the privilege to create namespaces).
func probeBwrap(path string) error {
	v, _ := probes.LoadOrStore(path, &probe{})
	pr := v.(*probe)
	pr.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
			"--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
			"--die-with-parent", "--cap-drop", "ALL", "--", "true")
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			if msg == "" {
				msg = err.Error()
			}
			pr.err = errors.New(msg)
		}
	})
	return pr.err
}

// resolveSandbox decides how an external processor named name runs under
// c: in a sandbox (non-nil) or not, with the one line to log at start
// saying which and why. With SandboxRequired and no usable bubblewrap it
// returns an error saying what to install.
func resolveSandbox(c Config, name string) (*sandbox, string, error) {
	if c.Sandbox == SandboxOff {
		return nil, fmt.Sprintf("processor %s runs without a sandbox (processor.sandbox: off)", name), nil
	}
	path := c.Bwrap
	if path == "" {
		path = "bwrap"
	}
	found, err := exec.LookPath(path)
	if err == nil {
		found, err = filepath.Abs(found)
	}
	if err != nil {
		if c.Sandbox == SandboxRequired {
			return nil, "", errors.New("processor.sandbox is required but bubblewrap (bwrap) is not installed: " +
				"apt-get install bubblewrap / dnf install bubblewrap, or set processor.sandbox: auto")
		}
		return nil, fmt.Sprintf("processor %s runs WITHOUT a sandbox: bubblewrap (bwrap) is not installed; "+
			"apt-get install bubblewrap / dnf install bubblewrap to confine it, or set processor.sandbox: off to say this is intended", name), nil
	}
	if err := probeBwrap(found); err != nil {
		if c.Sandbox == SandboxRequired {
			return nil, "", fmt.Errorf("processor.sandbox is required but bubblewrap (%s) does not work here (%v): "+
				"enable unprivileged user namespaces or run the worker as root, or set processor.sandbox: auto", found, err)
		}
		return nil, fmt.Sprintf("processor %s runs WITHOUT a sandbox: bubblewrap (%s) does not work here (%v); "+
			"enable unprivileged user namespaces or run the worker as root, or set processor.sandbox: off to say this is intended", name, found, err), nil
	}
	net := "no network"
	if c.Network {
		net = "network allowed (processor.network)"
	}
	return &sandbox{bwrap: found, network: c.Network, hide: c.Hide},
		fmt.Sprintf("processor %s runs in a bubblewrap sandbox (%s): read-only system, writes only to its job's directories, %s", name, found, net), nil
}

// validateSandbox checks the sandbox settings of c.
func (c Config) validateSandbox() error {
	switch c.Sandbox {
	case "", SandboxAuto, SandboxRequired, SandboxOff:
	default:
		return fmt.Errorf("processor.sandbox %q is not one of auto, required, off", c.Sandbox)
	}
	for i, h := range c.Hide {
		if !filepath.IsAbs(h) {
			return fmt.Errorf("processor hide[%d] %q is not an absolute path", i, h)
		}
	}
	return c.Limits.validate()
}

// signalGroupButLeader sends sig to every process in the process group
// pgid except its leader. In the sandbox the leader is bwrap, which dies
// of SIGTERM at once and takes the sandbox with it; signalled this way,
// the processor gets its grace period as it does outside.
func signalGroupButLeader(pgid int, sig syscall.Signal) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// SandboxNote returns the line to log once at start about how p runs: in a
// sandbox or not, and why. Built-ins run inside the worker, unsandboxed and
// unlimited: they get "" unless sandbox settings were given that do not
// apply to them.
func SandboxNote(p Processor) string {
	switch p := p.(type) {
	case *external:
		return p.note
	case *builtin:
		return p.note
	}
	return ""
}
