package processor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCommandLineLayers(t *testing.T) {
	t.Parallel()
	env := Env{JobID: "0123456789abcdef0123456789abcdef", Input: "/vol/work/j/input/input.png",
		OutputDir: "/vol/work/j/output", WorkDir: "/vol/work/j/scratch"}
	limits := Limits{Memory: 512 << 20, CPUTime: 90 * time.Second, OpenFiles: 256, Processes: 32}
	base := external{name: "proc", path: "/srv/proc/run", argv: []string{"run", "--fast"}}

	t.Run("bare", func(t *testing.T) {
		p := base
		path, args, unit := p.commandLine(env)
		if diff := cmp.Diff([]string{"run", "--fast"}, args); diff != "" || path != "/srv/proc/run" || unit != "" {
			t.Errorf("path %q unit %q args (-want +got):\n%s", path, unit, diff)
		}
	})
	t.Run("limits as rlimits", func(t *testing.T) {
		p := base
		p.limits = limits
		path, args, _ := p.commandLine(env)
		want := []string{selfExe, shimArg, "as=536870912", "cpu=90", "nofile=256", "nproc=32", "--", "/srv/proc/run", "run", "--fast"}
		if diff := cmp.Diff(want, args); diff != "" || path != selfExe {
			t.Errorf("path %q args (-want +got):\n%s", path, diff)
		}
	})
	t.Run("scope, rlimits and sandbox", func(t *testing.T) {
		p := base
		p.limits = limits
		p.scope = &scope{systemdRun: "/usr/bin/systemd-run"}
		p.sandbox = &sandbox{bwrap: "/usr/bin/bwrap"}
		path, args, unit := p.commandLine(env)
		if path != "/usr/bin/systemd-run" || !strings.HasPrefix(unit, "conveyor-"+env.JobID+"-") {
			t.Fatalf("path %q unit %q", path, unit)
		}
		scopeEnd := slices.Index(args, "--")
		wantScope := []string{"/usr/bin/systemd-run", "--scope", "--quiet", "--collect", "--unit=" + unit,
			"--description=Conveyor processor", "-p", "MemoryMax=536870912", "-p", "MemorySwapMax=0", "-p", "TasksMax=32"}
		if diff := cmp.Diff(wantScope, args[:scopeEnd]); diff != "" {
			t.Errorf("systemd-run (-want +got):\n%s", diff)
		}
		// The cgroup holds memory and processes: the shim sets only the rest.
		rest := args[scopeEnd+1:]
		wantShim := []string{selfExe, shimArg, "cpu=90", "nofile=256", "--", "/usr/bin/bwrap"}
		if diff := cmp.Diff(wantShim, rest[:len(wantShim)]); diff != "" {
			t.Errorf("shim (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"--remount-ro", "/", "--", "/srv/proc/run", "--fast"}, rest[len(rest)-5:]); diff != "" {
			t.Errorf("end of the bwrap command (-want +got):\n%s", diff)
		}
	})
}

func TestSandboxArgs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exe := filepath.Join(dir, "proc")
	secret := filepath.Join(dir, "conveyor.yaml")
	for _, f := range []string{exe, secret} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := Env{Input: "/vol/in", OutputDir: "/vol/out", WorkDir: "/vol/work"}
	for _, network := range []bool{false, true} {
		s := &sandbox{bwrap: "/usr/bin/bwrap", network: network, hide: []string{secret, "/var/lib/conveyor", secret + "/"}}
		args := s.args(env, exe, []string{"proc", "a b"})
		joined := strings.Join(args, " ")
		for _, want := range []string{
			"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--cap-drop ALL",
			"--ro-bind /usr /usr", "--dev /dev", "--proc /proc", "--tmpfs /tmp",
			"--ro-bind " + dir + " " + dir,
			"--ro-bind /dev/null " + secret, // a hidden file in a visible directory
			"--ro-bind /vol/in /vol/in", "--bind /vol/out /vol/out", "--bind /vol/work /vol/work", "--chdir /vol/work",
		} {
			if !strings.Contains(joined, want) {
				t.Errorf("network=%v: %q missing from %s", network, want, joined)
			}
		}
		if got := slices.Contains(args, "--unshare-net"); got == network {
			t.Errorf("network=%v: --unshare-net present = %v", network, got)
		}
		if n := strings.Count(joined, "/dev/null "+secret); n != 1 {
			t.Errorf("a path named twice in hide is covered %d times: %s", n, joined)
		}
		if strings.Contains(joined, "/var/lib/conveyor") {
			t.Errorf("a hidden path outside the sandbox's view needs no mount: %s", joined)
		}
		// Hiding comes after the binds that would show it; the root goes
		// read-only last.
		if strings.Index(joined, "--ro-bind /dev/null "+secret) < strings.Index(joined, "--ro-bind "+dir+" "+dir) {
			t.Errorf("the hidden file is mounted before its directory: %s", joined)
		}
		if diff := cmp.Diff([]string{"--remount-ro", "/", "--", exe, "a b"}, args[len(args)-5:]); diff != "" {
			t.Errorf("end (-want +got):\n%s", diff)
		}
	}
}

func TestDetectScope(t *testing.T) {
	t.Parallel()
	booted := t.TempDir()
	if err := os.MkdirAll(filepath.Join(booted, "run", "systemd", "system"), 0o755); err != nil {
		t.Fatal(err)
	}
	notBooted := t.TempDir()
	found := func(string) (string, error) { return "/usr/bin/systemd-run", nil }
	missing := func(string) (string, error) { return "", errors.New("not found") }
	mem := Limits{Memory: 64 << 20}
	tests := []struct {
		name     string
		root     string
		limits   Limits
		euid     int
		lookPath func(string) (string, error)
		want     bool
	}{
		{"systemd, root, memory limit", booted, mem, 0, found, true},
		{"systemd, root, process limit", booted, Limits{Processes: 10}, 0, found, true},
		{"no memory or process limit", booted, Limits{OpenFiles: 100, CPUTime: time.Minute}, 0, found, false},
		{"systemd not PID 1", notBooted, mem, 0, found, false},
		{"not root", booted, mem, 1000, found, false},
		{"no systemd-run", booted, mem, 0, missing, false},
	}
	for _, tt := range tests {
		if got := detectScope(tt.root, tt.limits, tt.euid, tt.lookPath) != nil; got != tt.want {
			t.Errorf("%s: scope = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"512MiB": 512 << 20, "2GiB": 2 << 30, "1.5 GiB": 3 << 29, "64KiB": 64 << 10, "1GB": 1e9,
		"500MB": 500e6, "1048576": 1 << 20, "10B": 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "512M", "1G", "lots", "-1MiB", "MiB"} {
		if _, err := ParseSize(in); err == nil || !strings.Contains(err.Error(), "use a value like 512MiB") {
			t.Errorf("ParseSize(%q) = %v, want an error with an example", in, err)
		}
	}
	if got := FormatSize(64 << 20); got != "64 MiB" {
		t.Errorf("FormatSize = %q", got)
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		l    Limits
		want string
	}{
		{Limits{}, ""},
		{Limits{Memory: 1 << 30, CPUTime: time.Minute, OpenFiles: 1024, Processes: 64}, ""},
		{Limits{Memory: 1 << 20}, "processor.limits.memory must be at least 16 MiB (or unset for no limit), got 1 MiB"},
		{Limits{CPUTime: time.Millisecond}, "processor.limits.cpu_time must be at least 1s"},
		{Limits{OpenFiles: 3}, "processor.limits.open_files must be at least 16"},
		{Limits{Processes: -1}, "processor.limits.processes must be positive"},
	} {
		err := tt.l.validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("validate(%+v) = %v, want %q", tt.l, err, tt.want)
		}
	}
}

func TestLastLineAndOutOfMemory(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                "",
		"one\ntwo\n\n  \n":                "two",
		"Traceback...\nMemoryError\n":     "MemoryError",
		"bell\x07 and \x1b[31mcolour\r\n": "bell  and  [31mcolour",
		strings.Repeat("é", 400) + "\n":   strings.Repeat("é", 150) + "...",
	} {
		if got := lastLine(in); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", in, got, want)
		}
	}
	if !outOfMemory("Traceback (most recent call last):\nMemoryError\n") || !outOfMemory("fatal error: runtime: out of memory") ||
		!outOfMemory("fatal error: failed to reserve page summary memory\n") || outOfMemory("all good\n") {
		t.Error("outOfMemory misreads")
	}
	var tw tailWriter
	for i := 0; i < 3; i++ {
		tw.Write([]byte(strings.Repeat("x", tailSize-10)))
	}
	tw.Write([]byte("\nlast\n"))
	if s := tw.String(); len(s) != tailSize || lastLine(s) != "last" {
		t.Errorf("tail of %d bytes ending %q", len(s), lastLine(s))
	}
}

// TestSandboxArgsExecutableInSystemDirs: an executable in a system
// directory, or one reached through a merged-/usr link such as /bin, needs
// no bind of its own.
func TestSandboxArgsExecutableInSystemDirs(t *testing.T) {
	t.Parallel()
	s := &sandbox{bwrap: "/usr/bin/bwrap"}
	env := Env{Input: "/vol/in", OutputDir: "/vol/out", WorkDir: "/vol/work"}
	for _, exe := range []string{"/usr/bin/env", "/bin/sh"} {
		if _, err := os.Stat(exe); err != nil {
			continue
		}
		args := s.args(env, exe, []string{exe})
		for i := range args[:len(args)-2] {
			if args[i] == "--ro-bind" && args[i+1] == filepath.Dir(exe) {
				t.Errorf("%s: its directory is bound again: %v", exe, args)
			}
		}
	}
}
