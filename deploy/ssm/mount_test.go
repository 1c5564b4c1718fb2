package ssm_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The script names the data volume once, and that is the worker's --volume.
func TestScriptNamesTheVolumeOnce(t *testing.T) {
	t.Parallel()
	text := script(parse(t))
	if n := strings.Count(text, volume); n != 1 || !strings.Contains(text, "vol="+volume+"\n") {
		t.Errorf("%s appears %d times in the script, want once, as vol=%s", volume, n, volume)
	}
}

// mounted returns a fresh directory with a tmpfs mounted on it, or skips
// the test where this process may not mount (not root, no CAP_SYS_ADMIN).
func mounted(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): the /proc case stands for a mounted volume", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// bindOnRoot returns a directory of the root filesystem bind-mounted on
// itself: a mount point, on the root filesystem's device. It skips where
// that cannot be made.
func bindOnRoot(t *testing.T) string {
	t.Helper()
	var root, tmp syscall.Stat_t
	dir, err := os.MkdirTemp("/", ".conveyor-ssm-test-")
	if err != nil {
		t.Skipf("cannot make a directory on the root filesystem: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if syscall.Stat("/", &root) != nil || syscall.Stat(dir, &tmp) != nil || root.Dev != tmp.Dev {
		t.Skip("/ holds no directory of its own device here")
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// The script runs the worker only on a mounted data volume: a plain
// directory (the volume failed to attach or mount) and a mount point on
// the root filesystem are refused with a message that says so, and
// conveyor never runs.
func TestScriptRefusesToRunOffTheVolume(t *testing.T) {
	if _, err := exec.LookPath("mountpoint"); err != nil {
		t.Skip("no mountpoint(1) (util-linux) here; Amazon Linux has it")
	}
	_, text := render(t, parse(t), map[string]string{"ExecutionTimeout": "3600"})
	cases := []struct {
		name, vol, want string // want: "" runs conveyor, else the refusal's words
	}{
		{"tmpfs mounted", "", ""},
		{"plain directory", t.TempDir(), "the data volume is not mounted at"},
		{"missing directory", filepath.Join(t.TempDir(), "none"), "the data volume is not mounted at"},
		{"bind mount on the root filesystem", "", "is on the root filesystem"},
	}
	for _, sh := range shells(t) {
		for _, c := range cases {
			t.Run(filepath.Base(sh)+"/"+c.name, func(t *testing.T) {
				vol := c.vol
				switch c.name {
				case "tmpfs mounted":
					vol = mounted(t)
				case "bind mount on the root filesystem":
					vol = bindOnRoot(t)
				}
				_, scriptPath, ran := prepareVolume(t, text, vol)
				stdout, stderr, err := run(sh, scriptPath, "SSM_JobId="+validID)
				_, statErr := os.Stat(ran)
				if c.want == "" {
					if err != nil || statErr != nil || !strings.Contains(stdout, "--volume\n"+vol+"\n") {
						t.Fatalf("on a mounted volume: %v, conveyor ran: %v\nstdout %s\nstderr %s", err, statErr == nil, stdout, stderr)
					}
					return
				}
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Errorf("script exited %v, want exit status 1", err)
				}
				if statErr == nil {
					t.Error("conveyor ran off the volume")
				}
				if !strings.Contains(stderr, "conveyor: refusing to run job "+validID) || !strings.Contains(stderr, c.want) {
					t.Errorf("stderr %q: want the refusal, saying %q", stderr, c.want)
				}
			})
		}
	}
}
