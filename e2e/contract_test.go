package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// The job contract (../shared/DESIGN.md) as a user meets it: one test per
// way it used to break. TestHistory checks the same invariants under
// random interleavings.

// TestOverwritesXYXEachProcessed: uploading X, Y, then X again to one key
// is three jobs, and the output describes the last upload.
func TestOverwritesXYXEachProcessed(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	var ids []string
	for _, body := range []string{"X", "Y", "X"} {
		id := put(t, up.S3, "k.txt", []byte(body))
		waitRecord(t, up.S3, id, jobTimeout, "finished", func(r *job.Record) bool { return r.State.Terminal() })
		ids = append(ids, id)
	}
	if ids[0] == ids[2] {
		t.Fatalf("the third upload (X again) got the first one's job %s", ids[0])
	}
	last := waitState(t, up.S3, ids[2], job.Succeeded, jobTimeout)
	checkReport(t, up.S3, last, []byte("X"))
}

// TestQuickOverwritesAreSupersededNotDead: of 20 quick overwrites of one
// key, the last succeeds, none is dead, and the output is the last one's.
func TestQuickOverwritesAreSupersededNotDead(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	var ids []string
	for i := range 20 {
		ids = append(ids, put(t, up.S3, "hot.txt", []byte(fmt.Sprintf("version %d", i))))
	}
	last := waitState(t, up.S3, ids[len(ids)-1], job.Succeeded, jobTimeout)
	superseded := 0
	for _, id := range ids[:len(ids)-1] {
		r := waitRecord(t, up.S3, id, jobTimeout, "finished", func(r *job.Record) bool { return r.State.Terminal() })
		switch r.State {
		case job.Dead:
			t.Errorf("job %s of an overwritten version is dead (%s); want superseded or succeeded", id, r.Error)
		case job.Superseded:
			superseded++
		}
	}
	checkReport(t, up.S3, last, []byte("version 19"))
	// `jobs --state superseded` lists exactly those.
	out, stderr, code := runCLI(t, "jobs", "--data-dir", up.DataDir, "--state", "superseded", "-o", "json")
	var listed []job.Record
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil {
		t.Fatalf("conveyor jobs --state superseded: exit %d, %s%s", code, out, stderr)
	}
	if len(listed) != superseded {
		t.Fatalf("jobs --state superseded lists %d jobs; the records say %d", len(listed), superseded)
	}
	t.Logf("20 overwrites: %d superseded, %d succeeded", superseded, 20-superseded)
}

// TestGetRefusesAnOutputOfAnotherJob: once a newer version replaced the
// outputs of a key, `get` of the older job says so instead of serving the
// newer bytes as the older job's; `get KEY` gives the current version's.
func TestGetRefusesAnOutputOfAnotherJob(t *testing.T) {
	t.Parallel()
	up := startUp(t, upOptions{})
	first := put(t, up.S3, "doc.txt", []byte("first"))
	waitState(t, up.S3, first, job.Succeeded, jobTimeout)
	second := put(t, up.S3, "doc.txt", []byte("second, longer"))
	waitState(t, up.S3, second, job.Succeeded, jobTimeout)

	dir := t.TempDir()
	_, stderr, code := runCLI(t, "get", first, "--data-dir", up.DataDir, "--to", dir)
	if code == 0 || !strings.Contains(stderr, second) {
		t.Fatalf("get of the replaced job: exit %d, stderr %q; want a refusal naming job %s", code, stderr, second)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err == nil {
		t.Fatal("get wrote another job's output as the replaced job's")
	}
	stdout, stderr, code := runCLI(t, "get", "doc.txt", "--data-dir", up.DataDir, "--to", dir)
	if code != 0 {
		t.Fatalf("get doc.txt: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil || !strings.Contains(string(b), sha256Hex([]byte("second, longer"))) {
		t.Fatalf("get doc.txt wrote %q (%v); stdout %s", b, err, stdout)
	}
}

// TestRestartDuringALongJobIsNotAFailure: with one attempt allowed, a
// graceful stop in the middle of a job hands it back; after the restart
// it succeeds at attempt 1.
func TestRestartDuringALongJobIsNotAFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	script := writeScript(t, dir, "long.sh", fmt.Sprintf(`echo $$ >> %q
sleep 2
echo done > "$CONVEYOR_OUTPUT_DIR/out.txt"
`, marker))
	opts := upOptions{
		Config:  fmt.Sprintf("processor:\n  command: [%q]\nretry:\n  max_attempts: 1\nreconcile:\n  interval: 1s\n", script),
		DataDir: t.TempDir(), Port: freePort(t),
	}
	up := startUp(t, opts)
	id := put(t, up.S3, "long.bin", []byte("data"))
	waitFile(t, marker)
	up.stop() // Ctrl-C mid-job
	// The server is down: read the record where the embedded server keeps
	// it, as a plain file.
	raw, err := os.ReadFile(filepath.Join(opts.DataDir, "s3", stateBucket, "jobs", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r job.Record
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.State != job.Queued || r.Attempt != 0 || r.Handbacks != 1 {
		t.Fatalf("after a graceful stop mid-job: state %s, attempt %d, hand-backs %d; want queued, 0, 1", r.State, r.Attempt, r.Handbacks)
	}
	up = startUp(t, opts)
	done := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
	if done.Attempt != 1 || len(done.Attempts) != 1 || done.Handbacks != 1 {
		t.Fatalf("succeeded after %d attempts (%+v); a restart counted as one", done.Attempt, done.Attempts)
	}
}

// TestCrashKillsTheProcessorAndCountsOneAttempt: kill -9 of `conveyor up`
// kills its processor (and what the processor started), the restart never
// runs a second processor beside an orphan, and the crash counts one
// attempt with a cause that says so.
func TestCrashKillsTheProcessorAndCountsOneAttempt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	overlap := filepath.Join(dir, "overlap")
	// The first run records its pid and its child's, then hangs; a later
	// run checks that neither is alive and finishes.
	script := writeScript(t, dir, "hang.sh", fmt.Sprintf(`if [ -s %[1]q ]; then
  for p in $(cat %[1]q); do
    # alive unless gone or a zombie (exited, not yet reaped by init)
    st=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)
    if [ -n "$st" ] && [ "$st" != Z ]; then echo "$p alive ($st)" >> %[2]q; fi
  done
  echo ok > "$CONVEYOR_OUTPUT_DIR/out.txt"
  exit 0
fi
sleep 300 &
echo "$$ $!" > %[1]q.tmp && mv %[1]q.tmp %[1]q
wait
`, pids, overlap))
	opts := upOptions{
		Config:  fmt.Sprintf("processor:\n  command: [%q]\nreconcile:\n  interval: 1s\n", script),
		DataDir: t.TempDir(), Port: freePort(t),
	}
	up := startUp(t, opts)
	id := put(t, up.S3, "crash.bin", []byte("data"))
	waitFile(t, pids)
	b, _ := os.ReadFile(pids)
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		t.Fatalf("pid file %q", b)
	}
	leader, _ := strconv.Atoi(fields[0])
	child, _ := strconv.Atoi(fields[1])
	if !procAlive(leader, "") || !procAlive(child, "") {
		t.Fatalf("processor %d / child %d not running before the crash", leader, child)
	}
	up.kill9()
	// The parent-death signal kills the processor itself at once.
	mustBeGone(t, leader, 5*time.Second, "processor after its worker was killed -9")

	up = startUp(t, opts)
	r := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
	mustBeGone(t, child, 5*time.Second, "the processor's child after the restart")
	if b, err := os.ReadFile(overlap); err == nil {
		t.Fatalf("the restarted job ran beside processes of the crashed attempt: %s", b)
	}
	if r.Attempt != 2 || !strings.HasPrefix(r.Attempts[0].Error, job.CrashCause) {
		t.Fatalf("after a crash: attempt %d, first attempt %+v; want 2 and %q", r.Attempt, r.Attempts[0], job.CrashCause)
	}
}

// mustBeGone fails the test unless pid stops running within bound.
func mustBeGone(t *testing.T, pid int, bound time.Duration, what string) {
	t.Helper()
	if _, ok := waitGone(pid, bound); !ok {
		t.Fatalf("%s (pid %d) still runs after %s", what, pid, bound)
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written within %s", path, jobTimeout)
		}
		time.Sleep(pollEvery)
	}
}
