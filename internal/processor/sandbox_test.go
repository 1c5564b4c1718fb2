package processor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// requireSandbox skips the test when bubblewrap is truly unusable on this
// machine, except in CI (CI=true) or with CONVEYOR_REQUIRE_SANDBOX=1, where
// that fails the test instead: there the sandbox must be tested.
func requireSandbox(t *testing.T) {
	t.Helper()
	path, err := exec.LookPath("bwrap")
	if err == nil {
		err = probeBwrap(path)
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" || os.Getenv("CONVEYOR_REQUIRE_SANDBOX") == "1" {
		t.Fatalf("bubblewrap is not usable (%v), but CI or CONVEYOR_REQUIRE_SANDBOX=1 requires the sandbox tests: install bubblewrap", err)
	}
	t.Skipf("bubblewrap is not usable here (%v): sandbox not tested; install bubblewrap (CI does)", err)
}

// probeMain is a processor that does what $CONVEYOR_PROCESSOR_TEST_PROBE
// says: "connect ADDR" dials ADDR over TCP and exits 0 if it connected.
func probeMain() int {
	what, arg, _ := strings.Cut(os.Getenv(probeEnv), " ")
	switch what {
	case "connect":
		c, err := net.DialTimeout("tcp", arg, 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			return 1
		}
		c.Close()
		fmt.Println("probe: connected")
		return 0
	}
	fmt.Fprintln(os.Stderr, "probe: unknown", what)
	return 2
}

// hostHasFile fails the test unless path exists outside the sandbox and
// the test can read it: a setup check, so that "not readable inside" means
// something.
func hostHasFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.ReadFile(path); err != nil {
		t.Fatalf("setup: %s must be readable outside the sandbox: %v", path, err)
	}
}

// hostWritable fails the test unless the test itself can create a file
// in dir outside the sandbox.
func hostWritable(t *testing.T, dir string) {
	t.Helper()
	if !canWrite(dir) {
		t.Fatalf("setup: %s must be writable outside the sandbox", dir)
	}
}

// canWrite reports whether the test can create a file in dir.
func canWrite(dir string) bool {
	f, err := os.CreateTemp(dir, ".conveyor-sandbox-setup-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// runScript runs body as a sandboxed processor and returns its log.
func runScript(t *testing.T, body string, c Config, env Env) (string, error) {
	t.Helper()
	if c.Sandbox == "" {
		c.Sandbox = SandboxRequired
	}
	p := newExternal(t, writeScript(t, body), c)
	log := newSyncLog("")
	err := p.Run(context.Background(), env, log)
	return log.String(), err
}

func TestSandboxWritesOnlyToItsDirectories(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir() // stands for the worker's data dir
	if err := os.WriteFile(filepath.Join(dataDir, "credentials"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("conveyor-sandbox-%d-%d", os.Getpid(), time.Now().UnixNano())
	env := newEnv(t, "k", []byte("the input"))
	// Places the processor must not write to, among those the test itself
	// can write to outside the sandbox (as root: all of them).
	hostWritable(t, dataDir)
	hostWritable(t, "/tmp")
	forbidden := []string{filepath.Join(dataDir, name), filepath.Join(dataDir, "credentials")}
	for _, d := range []string{"/etc", "/", home} {
		if canWrite(d) {
			forbidden = append(forbidden, filepath.Join(d, name))
		} else {
			t.Logf("not tried: %s is not writable outside the sandbox either", d)
		}
	}
	forbidden = append(forbidden, env.Input) // last: it exists, read-only
	t.Cleanup(func() {
		for _, f := range forbidden[:len(forbidden)-1] {
			if f != filepath.Join(dataDir, "credentials") {
				os.Remove(f)
			}
		}
	})
	script := `set -u
for f in "$@"; do
	if echo overwritten 2>/dev/null > "$f"; then echo "wrote $f"; else echo "refused $f"; fi
done
cat "$CONVEYOR_INPUT" > "$CONVEYOR_OUTPUT_DIR/copy"
echo scratch > "$CONVEYOR_WORK_DIR/scratch"
echo tmp > /tmp/` + name + ` && cat /tmp/` + name + ` > "$CONVEYOR_OUTPUT_DIR/tmp"
`
	p := newExternal(t, writeScript(t, script), Config{Command: forbidden, Sandbox: SandboxRequired})
	log := newSyncLog("")
	if err := p.Run(context.Background(), env, log); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	for _, f := range forbidden {
		if !strings.Contains(log.String(), "refused "+f+"\n") {
			t.Errorf("the processor could write %s:\n%s", f, log.String())
		}
	}
	for _, f := range forbidden[:len(forbidden)-1] {
		b, err := os.ReadFile(f)
		if f == filepath.Join(dataDir, "credentials") {
			if string(b) != "secret" {
				t.Errorf("%s changed on the host: %q, %v", f, b, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists on the host after the run (%v)", f, err)
		}
	}
	if b, _ := os.ReadFile(env.Input); string(b) != "the input" {
		t.Errorf("the input changed: %q", b)
	}
	for file, want := range map[string]string{
		filepath.Join(env.OutputDir, "copy"):  "the input",
		filepath.Join(env.WorkDir, "scratch"): "scratch\n",
		filepath.Join(env.OutputDir, "tmp"):   "tmp\n",
	} {
		if b, err := os.ReadFile(file); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	if _, err := os.Stat("/tmp/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sandbox's /tmp is not private: /tmp/%s exists on the host (%v)", name, err)
		os.Remove("/tmp/" + name)
	}
}

func TestSandboxNetwork(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // after the parallel subtests
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// Setup: the listener takes connections from outside the sandbox.
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("setup: connect to the test listener: %v", err)
	}
	c.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, network := range []bool{false, true} {
		t.Run(fmt.Sprintf("network=%v", network), func(t *testing.T) {
			t.Parallel()
			p, err := New(Config{Command: []string{self}, Env: []string{probeEnv + "=connect " + ln.Addr().String()},
				Sandbox: SandboxRequired, Network: network})
			if err != nil {
				t.Fatal(err)
			}
			log := newSyncLog("")
			err = p.Run(context.Background(), newEnv(t, "k", nil), log)
			switch {
			case network && err != nil:
				t.Fatalf("with processor.network the processor could not connect: %v\n%s", err, log.String())
			case !network && err == nil:
				t.Fatalf("without processor.network the processor connected to %s:\n%s", ln.Addr(), log.String())
			case !network && !strings.Contains(log.String(), "probe: dial tcp"):
				t.Fatalf("the probe did not run as expected: %v\n%s", err, log.String())
			}
		})
	}
}

func TestSandboxHidesCredentials(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	// A home with AWS credentials, and a worker configuration beside the
	// processor (whose directory the sandbox shows), named in Hide.
	home := t.TempDir()
	awsCreds := filepath.Join(home, ".aws", "credentials")
	os.MkdirAll(filepath.Dir(awsCreds), 0o700)
	dir := t.TempDir()
	config := filepath.Join(dir, "conveyor.yaml")
	for _, f := range []string{awsCreds, config} {
		if err := os.WriteFile(f, []byte("aws_secret_access_key = SECRET\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	secrets := []string{awsCreds, config}
	if _, err := os.ReadFile("/etc/shadow"); err == nil {
		secrets = append(secrets, "/etc/shadow")
	}
	for _, f := range secrets {
		hostHasFile(t, f)
	}
	script := filepath.Join(dir, "proc.sh")
	writeExecutable(t, script, `#!/bin/sh
for f in "$@"; do
	if [ -s "$f" ] && cat "$f" >/dev/null 2>&1; then echo "read $f"; else echo "hidden $f"; fi
done
cat "$(dirname "$0")/helper.txt"
`)
	if err := os.WriteFile(filepath.Join(dir, "helper.txt"), []byte("helper beside the processor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Command: append([]string{script}, secrets...), Sandbox: SandboxRequired, Hide: []string{config}})
	if err != nil {
		t.Fatal(err)
	}
	log := newSyncLog("")
	if err := p.Run(context.Background(), newEnv(t, "k", nil), log); err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	for _, f := range secrets {
		if !strings.Contains(log.String(), "hidden "+f+"\n") {
			t.Errorf("the processor could read %s:\n%s", f, log.String())
		}
	}
	if !strings.Contains(log.String(), "helper beside the processor") {
		t.Errorf("the processor's own directory is not readable:\n%s", log.String())
	}
}

func TestSandboxMemoryLimit(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("setup: this test allocates with %s: %v (install python3)", python, err)
	}
	const alloc = "b = bytearray(256 << 20); print('allocated', len(b))"
	for _, mode := range []string{SandboxRequired, SandboxOff} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			if mode == SandboxRequired {
				requireSandbox(t)
			}
			// Setup: without a limit, the allocation succeeds.
			p, err := New(Config{Command: []string{python, "-c", alloc}, Sandbox: mode})
			if err != nil {
				t.Fatal(err)
			}
			log := newSyncLog("")
			if err := p.Run(context.Background(), newEnv(t, "k", nil), log); err != nil {
				t.Fatalf("setup: the allocation fails without a limit: %v\n%s", err, log.String())
			}

			p, err = New(Config{Command: []string{python, "-c", alloc}, Sandbox: mode, Limits: Limits{Memory: 64 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			log = newSyncLog("")
			err = p.Run(context.Background(), newEnv(t, "k", nil), log)
			var ee *ExitError
			if !errors.As(err, &ee) || ee.MemoryLimit != 64<<20 {
				t.Fatalf("Run = %v, want an *ExitError with MemoryLimit 64 MiB\nlog:\n%s", err, log.String())
			}
			if !strings.HasPrefix(err.Error(), "processor exceeded its memory limit (64 MiB)") {
				t.Errorf("cause %q does not say the memory limit was exceeded", err)
			}
		})
	}
}

func TestSandboxOtherLimits(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	out, err := runScript(t, `ulimit -n; ulimit -t; ulimit -v`, Config{Limits: Limits{OpenFiles: 64, CPUTime: 1500 * time.Millisecond, Memory: 1 << 30}},
		newEnv(t, "k", nil))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	if diff := cmp.Diff("64\n2\n1048576\n", out); diff != "" {
		t.Errorf("limits seen by the processor (-want +got):\n%s", diff)
	}
	_, err = runScript(t, `while :; do :; done`, Config{Limits: Limits{CPUTime: time.Second}}, newEnv(t, "k", nil))
	if err == nil || !strings.Contains(err.Error(), "exceeded its CPU time limit") {
		t.Errorf("a processor past its CPU time: %v", err)
	}
}

func TestSandboxRequiredWithoutBubblewrap(t *testing.T) {
	t.Parallel()
	script := writeScript(t, "echo ran unsandboxed > \"$CONVEYOR_OUTPUT_DIR/note\"\n")
	const want = "processor.sandbox is required but bubblewrap (bwrap) is not installed: " +
		"apt-get install bubblewrap / dnf install bubblewrap, or set processor.sandbox: auto"
	_, err := New(Config{Command: []string{script}, Sandbox: SandboxRequired, Bwrap: "conveyor-no-such-bwrap"})
	if err == nil || err.Error() != want {
		t.Fatalf("New = %v, want %q", err, want)
	}

	// auto runs without the sandbox and says so.
	p, err := New(Config{Command: []string{script}, Bwrap: "conveyor-no-such-bwrap"})
	if err != nil {
		t.Fatal(err)
	}
	if note := SandboxNote(p); !strings.Contains(note, "WITHOUT a sandbox: bubblewrap (bwrap) is not installed") {
		t.Errorf("note = %q", note)
	}
	env := newEnv(t, "k", nil)
	if err := p.Run(context.Background(), env, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(env.OutputDir, "note")); err != nil {
		t.Errorf("auto without bubblewrap did not run the processor: %v", err)
	}

	// Installed but not working (no user namespaces, say).
	broken := writeScript(t, "echo 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
	_, err = New(Config{Command: []string{script}, Sandbox: SandboxRequired, Bwrap: broken})
	if err == nil || !strings.Contains(err.Error(), "processor.sandbox is required but bubblewrap ("+broken+") does not work here (bwrap: No permissions") {
		t.Fatalf("New with a broken bwrap = %v", err)
	}
}

// groupAlive lists the live processes of process group pgid.
func groupAlive(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == fmt.Sprint(pgid) && f[0] != "Z" && f[0] != "X" {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGroupGone polls (up to bound) until process group pgid has no live
// process, reaping those that became ours.
func waitGroupGone(t *testing.T, pgid int, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		var ws syscall.WaitStatus
		for {
			if pid, _ := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
		left := groupAlive(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			t.Fatalf("processes %v of group %d still run %s later", left, pgid, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSandboxLeftoversDieWithIt(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	pgid := 0
	env := newEnv(t, "k", nil)
	env.Started = func(g int) { pgid = g }
	p := newExternal(t, writeScript(t, "sleep 1000 &\necho done\n"), Config{Sandbox: SandboxRequired})
	start := time.Now()
	if err := p.Run(context.Background(), env, nil); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("Run took %s", time.Since(start))
	}
	if pgid == 0 {
		t.Fatal("Started was not called")
	}
	waitGroupGone(t, pgid, time.Second)
}

// TestSandboxTimeoutGivesGrace: on timeout the sandboxed processor gets
// SIGTERM and its grace, though bwrap itself would die of SIGTERM at once.
func TestSandboxTimeoutGivesGrace(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	pgid := 0
	env := newEnv(t, "k", nil)
	env.Started = func(g int) { pgid = g }
	script := writeScript(t, `trap 'sleep 0.2; echo cleaned > "$CONVEYOR_WORK_DIR/term"; exit 143' TERM
echo started
sleep 1000 &
wait
`)
	p := newExternal(t, script, Config{Sandbox: SandboxRequired, Timeout: 500 * time.Millisecond})
	err := p.Run(context.Background(), env, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run = %v, want ErrTimeout", err)
	}
	if b, err := os.ReadFile(filepath.Join(env.WorkDir, "term")); err != nil || string(b) != "cleaned\n" {
		t.Errorf("the processor did not get to clean up after SIGTERM: %q, %v", b, err)
	}
	waitGroupGone(t, pgid, time.Second)
}

func TestSandboxMissingInterpreterIsNotFound(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	path := filepath.Join(t.TempDir(), "proc")
	writeExecutable(t, path, "#!/nonexistent/interpreter\n")
	p := newExternal(t, path, Config{Sandbox: SandboxRequired})
	err := p.Run(context.Background(), newEnv(t, "k", nil), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "interpreter") {
		t.Fatalf("Run = %v, want ErrNotFound about the interpreter", err)
	}
}

func TestSandboxEnvironment(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	env := newEnv(t, "k", nil)
	lock, err := os.Create(filepath.Join(t.TempDir(), "job.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	env.Lock = lock
	out, err := runScript(t, `echo "home=$HOME pwd=$(pwd)"; readlink /proc/self/fd/3`, Config{}, env)
	if err != nil {
		t.Fatal(err)
	}
	if want := "home=" + env.WorkDir + " pwd=" + env.WorkDir + "\n" + lock.Name() + "\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

// TestLimitsShimMissingInterpreterIsNotFound: unsandboxed, under the
// limits shim, a missing #! interpreter is still ErrNotFound.
func TestLimitsShimMissingInterpreterIsNotFound(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "proc")
	writeExecutable(t, path, "#!/nonexistent/interpreter\n")
	p := newExternal(t, path, Config{Sandbox: SandboxOff, Limits: Limits{OpenFiles: 64}})
	err := p.Run(context.Background(), newEnv(t, "k", nil), nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "interpreter") {
		t.Fatalf("Run = %v, want ErrNotFound about the interpreter", err)
	}
}

// TestSandboxHidesNestedPaths: a hidden directory and a hidden file inside
// it, both in the processor's directory, are both covered.
func TestSandboxHidesNestedPaths(t *testing.T) {
	t.Parallel()
	requireSandbox(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	os.Mkdir(conf, 0o700)
	for _, f := range []string{filepath.Join(conf, "a.yaml"), filepath.Join(conf, "b.yaml")} {
		if err := os.WriteFile(f, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		hostHasFile(t, f)
	}
	script := filepath.Join(dir, "proc.sh")
	writeExecutable(t, script, "#!/bin/sh\ncat \"$1\" \"$2\" 2>/dev/null; echo end\n")
	p, err := New(Config{Command: []string{script, filepath.Join(conf, "a.yaml"), filepath.Join(conf, "b.yaml")},
		Sandbox: SandboxRequired, Hide: []string{conf, filepath.Join(conf, "a.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	log := newSyncLog("")
	if err := p.Run(context.Background(), newEnv(t, "k", nil), log); err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if log.String() != "end\n" {
		t.Errorf("the processor read hidden files: %q", log.String())
	}
}

func TestSandboxNoteOfBuiltins(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		c    Config
		want string
	}{
		{Config{Name: "report"}, ""},
		{Config{Name: "zstd", Sandbox: SandboxRequired}, "built-in processor zstd runs inside the worker: processor.sandbox, network and limits apply to external processors (processor.command) only"},
		{Config{Name: "noop", Limits: Limits{Memory: 1 << 30}}, "built-in processor noop runs inside the worker"},
	} {
		p, err := New(tt.c)
		if err != nil {
			t.Fatal(err)
		}
		if got := SandboxNote(p); !strings.HasPrefix(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("%+v: note %q, want %q", tt.c, got, tt.want)
		}
	}
}
