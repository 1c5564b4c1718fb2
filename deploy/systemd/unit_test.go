package systemd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const unitFile = "conveyor.service"

// installedBinary is where the unit expects conveyor; verify runs on a copy
// with this path replaced by a freshly built binary.
const installedBinary = "/usr/local/bin/conveyor"

// required reports whether a missing tool must fail the test rather than
// skip it: in CI, which installs the tools (.ci/run).
func required() bool {
	return os.Getenv("CONVEYOR_REQUIRE_SANDBOX") == "1" || os.Getenv("CI") == "true"
}

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if required() {
			t.Fatalf("%s is not installed: apt-get install %s (.ci/run installs it)", name, pkg)
		}
		t.Skipf("%s is not installed: apt-get install %s to run this test", name, pkg)
	}
	return p
}

// directives reads the unit as systemd does for what the tests need:
// section.key -> values in order (a key may repeat).
func directives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q is not KEY=VALUE", unitFile, line)
			}
			d[section+"."+k] = append(d[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUnitVerifies runs `systemd-analyze verify` on a copy of the unit
// whose ExecStart names a conveyor built from this tree (verify checks
// that the executable exists). Any warning fails: verify exits 0 on an
// unknown or misspelt directive, which it only prints.
func TestUnitVerifies(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := buildConveyor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(unit, []byte("ExecStart="+installedBinary+" ")); n != 1 {
		t.Fatalf("%s has %d ExecStart= lines naming %s, want 1", unitFile, n, installedBinary)
	}
	copyPath := filepath.Join(dir, unitFile)
	if err := os.WriteFile(copyPath, bytes.ReplaceAll(unit, []byte(installedBinary), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(path string) (string, error) {
		cmd := exec.CommandContext(ctx, analyze, "verify", "--man=no", path)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := verify(copyPath); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
	// The check can fail: a misspelt directive is reported.
	bad := filepath.Join(dir, "bad", unitFile)
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, bytes.Replace(unit, []byte("NoNewPrivileges="), []byte("NoNewPrivilege="), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := verify(bad); !strings.Contains(out, "NoNewPrivilege") {
		t.Errorf("verify did not report a misspelt directive: %q", out)
	}
}

// TestUnitDirectives asserts what an operator relies on: readiness by
// sd_notify, a dedicated user, the state and configuration directories,
// the hardening, and the exceptions the sandbox needs.
func TestUnitDirectives(t *testing.T) {
	d := directives(t)
	want := map[string]string{
		"Service.Type":                    "notify",
		"Service.ExecStart":               installedBinary + " up --config /etc/conveyor/conveyor.yaml --data-dir /var/lib/conveyor",
		"Service.User":                    "conveyor",
		"Service.StateDirectory":          "conveyor",
		"Service.StateDirectoryMode":      "0700",
		"Service.ConfigurationDirectory":  "conveyor",
		"Service.KillMode":                "mixed",
		"Service.Restart":                 "on-failure",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.PrivateDevices":          "yes",
		"Service.ProtectKernelModules":    "yes",
		"Service.ProtectControlGroups":    "yes",
		"Service.LockPersonality":         "yes",
		"Service.MemoryDenyWriteExecute":  "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.SystemCallFilter":        "@system-service @mount",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		got, ok := d[k]
		if !ok || len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want exactly %q", k, got, v)
		}
	}
	// The data dir is the state directory: the only writable place under
	// ProtectSystem=strict.
	if !strings.Contains(d["Service.ExecStart"][0], "--data-dir /var/lib/"+d["Service.StateDirectory"][0]) {
		t.Errorf("ExecStart does not put the data dir in the StateDirectory")
	}
	// Long enough for a graceful stop: processors ended, attempts handed
	// back (bounded by seconds in internal/worker), the server closed.
	if ts := d["Service.TimeoutStopSec"]; len(ts) != 1 {
		t.Errorf("TimeoutStopSec = %q", ts)
	} else if dur, err := time.ParseDuration(ts[0]); err != nil || dur < time.Minute {
		t.Errorf("TimeoutStopSec = %s, want at least a minute", ts[0])
	}
	// bwrap needs these namespaces; a RestrictNamespaces without them
	// breaks every sandboxed processor.
	ns := " " + strings.Join(d["Service.RestrictNamespaces"], " ") + " "
	for _, n := range []string{"user", "mnt", "pid", "ipc", "uts", "net"} {
		if !strings.Contains(ns, " "+n+" ") {
			t.Errorf("RestrictNamespaces %q lacks %s, which bwrap creates", ns, n)
		}
	}
	// These mount over /proc and break bwrap's /proc (see
	// TestSandboxUnderUnitRestrictions); the unit explains why they are off.
	for _, k := range []string{"ProtectKernelTunables", "ProtectKernelLogs", "ProcSubset"} {
		if v, ok := d["Service."+k]; ok {
			t.Errorf("%s=%v is set: it breaks the processor sandbox", k, v)
		}
	}
}

// TestSandboxUnderUnitRestrictions runs the processor sandbox's own probe
// (the bwrap command line internal/processor runs before trusting it) the
// way the unit starts conveyor, as far as the kernel sees it without
// systemd: an unprivileged user, no new privileges, an empty capability
// bounding set, and the unit's mounts (a read-only root, a private /dev,
// a fresh hidepid=invisible /proc, read-only cgroupfs, a private /tmp). It must
// succeed; with /proc/kmsg masked (ProtectKernelLogs) or /proc/sys
// read-only (ProtectKernelTunables) it must fail, which is why the unit
// leaves those two off. The seccomp filters (SystemCallFilter,
// MemoryDenyWriteExecute, RestrictNamespaces) are systemd's own and are not
// reproduced here. Needs root (to set up the mounts), unshare, setpriv and
// bwrap.
func TestSandboxUnderUnitRestrictions(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd units are Linux only")
	}
	if os.Geteuid() != 0 {
		if required() {
			t.Fatal("this test builds the unit's mounts and must run as root in CI")
		}
		t.Skip("needs root to build the unit's mounts")
	}
	bwrap := needTool(t, "bwrap", "bubblewrap")
	needTool(t, "unshare", "util-linux")
	needTool(t, "setpriv", "util-linux")
	probe := bwrap + " --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp" +
		" --unshare-pid --unshare-ipc --unshare-uts --unshare-net --unshare-cgroup-try" +
		" --die-with-parent --cap-drop ALL -- true"
	asService := "setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --bounding-set=-all --inh-caps=-all " + probe
	// ProtectSystem=strict: the root read-only. PrivateDevices: a fresh
	// /dev holding only the basic nodes. ProtectProc=invisible: a fresh
	// hidepid=invisible /proc. ProtectControlGroups: cgroupfs read-only.
	// PrivateTmp: a private /tmp.
	hostDev := t.TempDir()
	unitMounts := "mount -o remount,bind,ro / && " +
		"mount --bind /dev " + hostDev + " && mount -t tmpfs -o mode=755,nosuid,noexec tmpfs /dev && " +
		"for n in null zero full random urandom tty; do touch /dev/$n; mount --bind " + hostDev + "/$n /dev/$n; done && umount -l " + hostDev + " && " +
		"mount -t proc -o hidepid=invisible proc /proc && mount -o remount,bind,ro /sys/fs/cgroup && mount -t tmpfs tmpfs /tmp"
	run := func(extra string) (string, error) {
		script := "set -e; " + unitMounts + "; " + extra + asService
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := run(""); err != nil {
		t.Fatalf("the sandbox probe fails under the unit's restrictions: %v\n%s", err, out)
	}
	for name, mask := range map[string]string{
		"ProtectKernelLogs":     "mount --bind /dev/null /proc/kmsg; ",
		"ProtectKernelTunables": "mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys; ",
	} {
		out, err := run(mask)
		if err == nil {
			t.Errorf("the sandbox probe works with %s's mount: the unit could set it again", name)
		} else if !strings.Contains(out, "proc") {
			t.Errorf("with %s's mount the probe failed otherwise than on /proc: %v\n%s", name, err, out)
		}
	}
}
