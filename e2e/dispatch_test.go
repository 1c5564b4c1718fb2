package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
)

// TestWorkerRunFreesItsSlotDuringBackoff: on a worker with one job slot,
// a job waiting out a retry's backoff does not keep another job waiting.
func TestWorkerRunFreesItsSlotDuringBackoff(t *testing.T) {
	t.Parallel()
	up := startLambdaUp(t) // its own pipeline leaves these jobs alone
	dir := t.TempDir()
	script := writeScript(t, dir, "proc.sh", `case "$CONVEYOR_INPUT_KEY" in
*fail-*) exit 1 ;;
esac
echo ok > "$CONVEYOR_OUTPUT_DIR/out.txt"
`)
	cfg := filepath.Join(dir, "conveyor.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("workers: 1\nprocessor:\n  command: [%q]\nretry:\n  max_attempts: 2\n  backoff: 5s\n", script)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := jobstore.New(up.S3, stateBucket)
	newJob := func(key string) string {
		oc := upload(t, up.S3, "slots/"+key, []byte(key))
		rec := job.New(inputBucket, oc.Key, oc.VersionID, oc.ETag, oc.Size, 2, time.Now())
		rec.Dispatcher = "ssm" // as the Lambda creates them: up's own reconciler leaves them alone
		if err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return rec.ID
	}
	failing, other := newJob("fail-a"), newJob("ok-b")
	workerRun := func(id string) *exec.Cmd {
		cmd := exec.Command(conveyorBin, "worker", "run", "--job", id, "--data-dir", up.DataDir, "--config", cfg)
		cmd.Env = cleanEnv()
		cmd.Dir = t.TempDir()
		return cmd
	}
	a := workerRun(failing)
	aOut := &syncBuffer{}
	a.Stdout, a.Stderr = aOut, aOut
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Process.Kill(); a.Wait() })
	if r := waitRecord(t, up.S3, failing, jobTimeout, "retrying", func(r *job.Record) bool { return r.State != job.Queued && r.State != job.Running }); r.State != job.Retrying {
		a.Process.Kill()
		a.Wait()
		t.Fatalf("failing job %s: %+v\nworker run: %s", failing, r, aOut)
	}

	if out, err := workerRun(other).CombinedOutput(); err != nil {
		t.Fatalf("worker run of the other job: %v\n%s", err, out)
	}
	r, err := record(ctx, up.S3, failing)
	if err != nil || r == nil {
		t.Fatal(err)
	}
	if r.State != job.Retrying || r.Attempt != 1 {
		t.Fatalf("the other job ran only after the failing one was %s (attempt %d): the slot was held through the backoff", r.State, r.Attempt)
	}
}
