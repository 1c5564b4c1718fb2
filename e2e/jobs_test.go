package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// logPath is the job's log on the volume.
func logPath(up *upProc, id string) string {
	return filepath.Join(up.DataDir, "volume", "logs", id+".log")
}

func readLog(t *testing.T, up *upProc, id string) string {
	t.Helper()
	b, err := os.ReadFile(logPath(up, id))
	if err != nil {
		t.Fatalf("log of job %s: %v", id, err)
	}
	return string(b)
}

// attemptHeaders counts the "=== conveyor: job <id> attempt N/M" lines.
func attemptHeaders(log, id string, n int) int {
	return strings.Count(log, fmt.Sprintf("=== conveyor: job %s attempt %d/", id, n))
}

// TestIdempotentEvents: an object version is one job, however often its
// event is seen (here: again by the reconciler of a restarted pipeline),
// and a finished job never runs again; every upload is a version of its
// own, so the same bytes uploaded again are a new job (the input bucket is
// versioned), and the output follows the last upload.
func TestIdempotentEvents(t *testing.T) {
	t.Parallel()
	opts := upOptions{DataDir: t.TempDir(), Port: freePort(t)}
	up := startUp(t, opts)
	ctx := context.Background()
	body := []byte("first version\n")

	id1 := put(t, up.S3, "same/key.txt", body)
	r1 := waitState(t, up.S3, id1, job.Succeeded, jobTimeout)
	again := put(t, up.S3, "same/key.txt", body)
	if again == id1 {
		t.Fatalf("re-uploading the same bytes gave the first upload's job %s: a new version must be a new job", id1)
	}
	waitState(t, up.S3, again, job.Succeeded, jobTimeout)

	// A restart reconciles every version at start-up: each already has its
	// job, so nothing is created or run again.
	up.stop()
	up = startUp(t, opts)
	waitState(t, up.S3, put(t, up.S3, "barrier.txt", []byte("barrier\n")), job.Succeeded, jobTimeout)
	r, err := record(ctx, up.S3, id1)
	if err != nil || r == nil {
		t.Fatalf("record %s: %v", id1, err)
	}
	if r.State != job.Succeeded || r.Attempt != 1 || len(r.Attempts) != 1 || !r.UpdatedAt.Equal(r1.UpdatedAt) {
		t.Errorf("the first version's record changed: state %s attempt %d attempts %d updated %s (was %s)", r.State, r.Attempt, len(r.Attempts), r.UpdatedAt, r1.UpdatedAt)
	}
	log := readLog(t, up, id1)
	if n := attemptHeaders(log, id1, 1); n != 1 || strings.Count(log, "=== conveyor: job ") != 1 {
		t.Errorf("log of %s has %d attempt-1 headers and %d headers in all, want exactly one:\n%s", id1, n, strings.Count(log, "=== conveyor: job "), log)
	}

	body2 := []byte("second version, new bytes\n")
	id2 := put(t, up.S3, "same/key.txt", body2)
	r2 := waitState(t, up.S3, id2, job.Succeeded, jobTimeout)
	checkReport(t, up.S3, r2, body2)
	perKey := 0
	for _, k := range listKeys(t, up.S3, stateBucket, "jobs/") {
		if r, _ := record(ctx, up.S3, strings.TrimSuffix(strings.TrimPrefix(k, "jobs/"), ".json")); r != nil && r.Key == "same/key.txt" {
			perKey++
		}
	}
	if perKey != 3 {
		t.Errorf("same/key.txt has %d job records after three uploads, want 3", perKey)
	}
}

// failingProcessor fails for keys starting with fail-, hangs for hang-
// (writing its pid to pidDir/<job>.pid), and copies the input otherwise.
func failingProcessor(t *testing.T, pidDir string) string {
	return writeScript(t, t.TempDir(), "proc.sh", fmt.Sprintf(`case "$CONVEYOR_INPUT_KEY" in
fail-*)
	echo "stderr line: failing on purpose for $CONVEYOR_JOB_ID" >&2
	exit 1 ;;
hang-*)
	echo $$ > %q/"$CONVEYOR_JOB_ID".pid
	exec sleep 600 ;;
esac
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy"
`, pidDir))
}

const failureConfig = `processor:
  command: [%q]
  timeout: 1s
retry:
  max_attempts: 3
  backoff: 200ms
  max_backoff: 1s
reconcile:
  interval: 1s
`

// TestFailures: a failing processor is retried with growing backoff and
// then the job is dead with its log and scratch kept; a hanging one is
// killed at the timeout; a missing one is a permanent failure; meanwhile
// other jobs still succeed.
func TestFailures(t *testing.T) {
	t.Parallel()
	const backoff = 200 * time.Millisecond

	t.Run("retries", func(t *testing.T) {
		t.Parallel()
		pidDir := t.TempDir()
		up := startUp(t, upOptions{Config: fmt.Sprintf(failureConfig, failingProcessor(t, pidDir))})

		failID := put(t, up.S3, "fail-always.txt", []byte("will fail\n"))
		hangID := put(t, up.S3, "hang-forever.txt", []byte("will hang\n"))
		okBody := []byte("served while others fail\n")
		okID := put(t, up.S3, "ok.txt", okBody)

		// The pipeline keeps serving while the others retry.
		ok := waitState(t, up.S3, okID, job.Succeeded, jobTimeout)
		outs := checkOutputs(t, up.S3, ok)
		if !bytes.Equal(outs["ok.txt/copy"], okBody) {
			t.Errorf("ok.txt/copy is %q, want %q", outs["ok.txt/copy"], okBody)
		}

		dead := waitState(t, up.S3, failID, job.Dead, jobTimeout)
		if dead.Attempt != 3 || dead.ExitCode == nil || *dead.ExitCode != 1 || len(dead.Attempts) != 3 {
			t.Errorf("dead job: attempt %d exit %v attempts %d, want 3, 1, 3", dead.Attempt, dead.ExitCode, len(dead.Attempts))
		}
		log := readLog(t, up, failID)
		for n := 1; n <= 3; n++ {
			if attemptHeaders(log, failID, n) != 1 {
				t.Errorf("log lacks the header of attempt %d:\n%s", n, log)
			}
		}
		if c := strings.Count(log, "stderr line: failing on purpose for "+failID); c != 3 {
			t.Errorf("log keeps %d of the processor's 3 stderr lines:\n%s", c, log)
		}
		if st, err := os.Stat(filepath.Join(up.DataDir, "volume", "work", failID)); err != nil || !st.IsDir() {
			t.Errorf("scratch dir of the dead job was not kept: %v", err)
		}
		if len(dead.Attempts) == 3 {
			a := dead.Attempts
			gap1 := a[1].StartedAt.Sub(a[0].FinishedAt)
			gap2 := a[2].StartedAt.Sub(a[1].FinishedAt)
			t.Logf("backoff gaps: %s then %s (configured %s doubling, ±20%% jitter)", gap1, gap2, backoff)
			// An attempt never starts before its backoff, which is at least
			// 80% of the nominal one; the nominal doubles.
			if gap1 < backoff*8/10 || gap2 < 2*backoff*8/10 {
				t.Errorf("gaps %s, %s are shorter than the backoff allows (%s, %s)", gap1, gap2, backoff*8/10, 2*backoff*8/10)
			}
			// Without scheduling delay gap1 <= 240ms < 320ms <= gap2.
			if gap2 <= gap1 {
				t.Errorf("backoff did not grow: gaps %s then %s", gap1, gap2)
			}
		}

		hung := waitState(t, up.S3, hangID, job.Dead, jobTimeout)
		if !strings.Contains(hung.Error, "timed out") && !strings.Contains(hung.Error, "timeout") {
			t.Errorf("hung job's error does not mention the timeout: %q", hung.Error)
		}
		b, err := os.ReadFile(filepath.Join(pidDir, hangID+".pid"))
		if err != nil {
			t.Fatalf("the hanging processor wrote no pid: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		// The last attempt's sleep must be gone (or reaped and the pid
		// reused by something that is not our sleep).
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.HasPrefix(string(cmd), "sleep\x00600") {
			t.Errorf("the hanging processor's sleep (pid %d) is still running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	t.Run("missing processor", func(t *testing.T) {
		t.Parallel()
		script := failingProcessor(t, t.TempDir())
		up := startUp(t, upOptions{Config: fmt.Sprintf(failureConfig, script)})
		if err := os.Remove(script); err != nil {
			t.Fatal(err)
		}
		id := put(t, up.S3, "after-removal.txt", []byte("no processor for me\n"))
		r := waitState(t, up.S3, id, job.Dead, jobTimeout)
		if r.Attempt != 1 || len(r.Attempts) != 1 {
			t.Errorf("missing processor: %d attempts, want 1 (a permanent failure)", r.Attempt)
		}
		log := readLog(t, up, id)
		if !strings.Contains(log, "not found") {
			t.Errorf("log does not say the processor was not found:\n%s", log)
		}
	})
}
