package systemd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables that turn the test binary into a launcher: it sets
// MemoryDenyWriteExecute's kernel equivalent on itself, then becomes the
// program named (mdweExec) or checks that the setting holds (mdweProbe).
// mdweGet makes it report whether the restriction holds, without setting
// it: run through mdweExec, that shows it survives execve.
const (
	mdweExec  = "CONVEYOR_TEST_MDWE_EXEC"
	mdweProbe = "CONVEYOR_TEST_MDWE_PROBE"
	mdweGet   = "CONVEYOR_TEST_MDWE_GET"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(mdweGet) != "" && os.Getenv(mdweExec) == "" {
		flags, err := unix.PrctlRetInt(unix.PR_GET_MDWE, 0, 0, 0, 0)
		if err != nil || flags&unix.PR_MDWE_REFUSE_EXEC_GAIN == 0 {
			fmt.Fprintf(os.Stderr, "PR_GET_MDWE = %d, %v: the restriction did not survive execve\n", flags, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(mdweExec) != "" || os.Getenv(mdweProbe) != "" {
		os.Exit(mdweLaunch())
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// mdweLaunch sets PR_SET_MDWE (Linux 6.3+): from now on, in this process
// and everything it executes, no mapping can be both writable and
// executable, nor become executable later; this is the restriction
// MemoryDenyWriteExecute=yes asks systemd for (with a seccomp filter on
// kernels before 6.3).
func mdweLaunch() int {
	if err := unix.Prctl(unix.PR_SET_MDWE, unix.PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl(PR_SET_MDWE):", err)
		return 97
	}
	if os.Getenv(mdweProbe) != "" {
		// What a JIT does: it must now fail.
		_, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err == nil {
			fmt.Fprintln(os.Stderr, "a writable and executable mapping was allowed")
			return 1
		}
		return 0
	}
	path := os.Getenv(mdweExec)
	env := []string{}
	for _, kv := range os.Environ() {
		if len(kv) < len(mdweExec) || kv[:len(mdweExec)] != mdweExec {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(path, append([]string{path}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 98
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildConveyor builds conveyor from this tree once per test binary.
func buildConveyor(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "conveyor-systemd-test-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "conveyor")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", builtBin, "github.com/conveyorhq/conveyor/cmd/conveyor").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build conveyor: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}
