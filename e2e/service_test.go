package e2e

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// TestUpNotifiesSystemd plays systemd's side of Type=notify: a unix
// datagram socket named by NOTIFY_SOCKET. READY=1 must come once, only when
// the S3 endpoint answers, with a STATUS line; STOPPING=1 must come when
// `up` is asked to stop.
func TestUpNotifiesSystemd(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := freePort(t)
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port) + "/"

	type note struct {
		msg      string
		answered bool // whether the S3 endpoint answered right after it arrived
	}
	notes := make(chan note, 8)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(notes)
				return
			}
			msg := string(buf[:n])
			answered := false
			if strings.Contains(msg, "READY=1") {
				// Any HTTP answer (403 without credentials) means the
				// endpoint serves; a refused connection means READY
				// came too early.
				if resp, err := http.Get(endpoint); err == nil {
					resp.Body.Close()
					answered = true
				}
			}
			notes <- note{msg, answered}
		}
	}()

	p := startUp(t, upOptions{Port: port, Env: []string{"NOTIFY_SOCKET=" + sock}})
	var ready note
	select {
	case ready = <-notes:
	case <-time.After(readyTimeout):
		t.Fatalf("no notification within %s of start; stderr:\n%s", readyTimeout, p.stderr)
	}
	if !strings.HasPrefix(ready.msg, "READY=1\n") || !strings.Contains(ready.msg, "STATUS=serving S3 on http://"+p.Addr) {
		t.Fatalf("first notification = %q, want READY=1 and a STATUS naming %s", ready.msg, p.Addr)
	}
	if !ready.answered {
		t.Fatalf("READY=1 arrived before the S3 endpoint %s answered", endpoint)
	}
	// The pipeline is really ready: a job runs to the end.
	id := put(t, p.S3, "notify/hello.txt", []byte("hello systemd\n"))
	waitState(t, p.S3, id, job.Succeeded, jobTimeout)

	p.stop()
	var stopping note
	select {
	case stopping = <-notes:
	case <-time.After(stopTimeout):
		t.Fatal("no notification after SIGINT")
	}
	if !strings.HasPrefix(stopping.msg, "STOPPING=1\n") {
		t.Errorf("notification after SIGINT = %q, want STOPPING=1 (and READY=1 only once before it)", stopping.msg)
	}
}

// TestUpRefusesBadNotifySocket: a NOTIFY_SOCKET that is not a
// unix socket is a clear usage error, not a silent no-op.
func TestUpRefusesBadNotifySocket(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(conveyorBin, "up", "--data-dir", t.TempDir(), "--s3-addr", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	cmd.Env = cleanEnv("NOTIFY_SOCKET=vsock:2:9999")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("conveyor up with NOTIFY_SOCKET=vsock:...: err %v, want exit code 2; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "NOTIFY_SOCKET") {
		t.Errorf("message does not name NOTIFY_SOCKET:\n%s", out)
	}
}

// TestVersionJSON: `conveyor version -o json` is one JSON object with the
// fields scripts read, describing this very binary.
func TestVersionJSON(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runCLI(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v map[string]string
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", stdout, err)
	}
	for _, k := range []string{"version", "commit", "go_version", "os", "arch"} {
		if v[k] == "" {
			t.Errorf("field %q is missing or empty in %s", k, stdout)
		}
	}
	if v["os"] != runtime.GOOS || v["arch"] != runtime.GOARCH || v["go_version"] != runtime.Version() {
		t.Errorf("os/arch/go = %s/%s/%s, want %s/%s/%s", v["os"], v["arch"], v["go_version"], runtime.GOOS, runtime.GOARCH, runtime.Version())
	}
	text, _, _ := runCLI(t, "version")
	if !strings.HasPrefix(text, "conveyor "+v["version"]+" (commit "+v["commit"]) {
		t.Errorf("text %q disagrees with JSON %s", text, stdout)
	}
	if _, stderr, code := runCLI(t, "version", "-o", "yaml"); code != 2 || !strings.Contains(stderr, "use text or json") {
		t.Errorf("-o yaml: exit %d, stderr %q; want 2 and the formats", code, stderr)
	}
}
