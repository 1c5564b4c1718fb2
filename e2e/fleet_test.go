package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm"
	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/volume"
)

const (
	fleetA     = "i-0aaaaaaaaaaaaaaa1"
	fleetB     = "i-0bbbbbbbbbbbbbbb2"
	fleetC     = "i-0ccccccccccccccc3"
	fleetGroup = "conveyor-workers"
	fleetSlots = 2
	fleetJobs  = 200
)

// fleetAgent plays the SSM agent of three instances: each command runs
// the real `conveyor worker run` on its instance's own volume, in its own
// process group so that killing an instance kills its jobs.
type fleetAgent struct {
	t       *testing.T
	dataDir string
	config  string
	volumes map[string]string

	mu      sync.Mutex
	running map[string]map[*exec.Cmd]bool
	lastEnd map[string]time.Time // when a worker run of the instance last ended
	ends    map[string][]runEnd
	done    atomic.Int32   // jobs that worker runs reported succeeded
	doneBy  map[string]int // the same, per instance
}

func (a *fleetAgent) run(c ssmtest.Command) string {
	ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, conveyorBin, "worker", "run", "--job", c.JobID, "--data-dir", a.dataDir,
		"--volume", a.volumes[c.Instance], "--config", a.config)
	cmd.Env = cleanEnv()
	cmd.Dir = filepath.Dir(a.volumes[c.Instance])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	a.mu.Lock()
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		a.t.Errorf("start worker run: %v", err)
		return "Failed"
	}
	a.running[c.Instance][cmd] = true
	a.mu.Unlock()
	err := cmd.Wait()
	a.mu.Lock()
	delete(a.running[c.Instance], cmd)
	a.lastEnd[c.Instance] = time.Now()
	a.ends[c.Instance] = append(a.ends[c.Instance], runEnd{time.Now(), out.String()})
	// A run reports its own job and those it took while their slots were
	// free.
	n := strings.Count(out.String(), " succeeded: ")
	a.doneBy[c.Instance] += n
	a.mu.Unlock()
	a.done.Add(int32(n))
	if err != nil {
		return "Failed" // killed, handed back, or refused while draining: the job stays queued
	}
	return "Success"
}

// runEnd is when a worker run ended and what it said.
type runEnd struct {
	at  time.Time
	out string
}

// kill kills every worker run of an instance, as its loss would.
func (a *fleetAgent) kill(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for cmd := range a.running[id] {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (a *fleetAgent) runningOn(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running[id])
}

// TestFleet: three instances of an Auto Scaling group, each running the
// real `conveyor worker run` on its own volume with two job slots, the
// real orchestrator and reconciler dispatching by load through the fake
// SSM, 200 jobs of random short duration. The load spreads (no worker
// over its slots, no command ever waiting at an agent while another
// worker has a free slot); one instance is killed mid-job, another is
// scaled in and drains before its lifecycle action completes; every job
// ends succeeded, by exactly one successful attempt; then the last
// worker, idle, stops into the warm pool, and the next upload brings a
// worker back while its job waits queued.
func TestFleet(t *testing.T) {
	t.Parallel()
	up := startLambdaUp(t)
	dir := t.TempDir()
	journal := filepath.Join(dir, "journal")
	proc := writeScript(t, dir, "proc.sh", `sleep "$(cat "$CONVEYOR_INPUT")"
echo "done by $CONVEYOR_JOB_ID" > "$CONVEYOR_OUTPUT_DIR/out.txt"
echo "$CONVEYOR_JOB_ID" >> `+journal+`
`)
	cfg := filepath.Join(dir, "conveyor.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("workers: %d\nprocessor:\n  command: [%q]\nworker:\n  lease: 3s\n", fleetSlots, proc)), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := &fleetAgent{t: t, dataDir: up.DataDir, config: cfg, volumes: map[string]string{},
		running: map[string]map[*exec.Cmd]bool{}, lastEnd: map[string]time.Time{}, ends: map[string][]runEnd{}, doneBy: map[string]int{}}
	var instances []ssmtest.Instance
	for _, id := range []string{fleetA, fleetB, fleetC} {
		agent.volumes[id] = filepath.Join(dir, "vol-"+id)
		agent.running[id] = map[*exec.Cmd]bool{}
		instances = append(instances, ssmtest.Instance{
			ID: id, Tags: map[string]string{"conveyor:role": "worker"}, State: "running", Ping: "Online",
			VCPUs: fleetSlots, AgentLimit: fleetSlots, StartLatency: 300 * time.Millisecond,
		})
	}
	fake := ssmtest.New(t, ssmtest.Options{
		Instances: instances,
		Group:     &ssmtest.Group{Name: fleetGroup, Hook: "conveyor-drain", Min: 0, Max: 3, InService: []string{fleetA, fleetB, fleetC}},
		Agent:     agent.run,
	})
	sc, ec := fake.Clients()
	d, err := ssm.New(ssm.Config{
		DocumentName: "conveyor-run-job", TagKey: "conveyor:role", TagValue: "worker",
		StartStopped: true, AutoScalingGroup: fleetGroup, LoadTTL: -1, WaitOnline: 20 * time.Second,
		Throttle: ssm.Throttle{MaxAttempts: 3, Base: time.Millisecond, Max: 4 * time.Millisecond},
	}, sc, ec, ssm.WithAutoScaling(fake.AutoScaling()))
	if err != nil {
		t.Fatal(err)
	}
	store := jobstore.New(up.S3, stateBucket)
	o, err := orchestrator.New(orchestrator.Config{InputBucket: inputBucket}, up.S3, store, d)
	if err != nil {
		t.Fatal(err)
	}
	recon := orchestrator.NewReconciler(o, 200*time.Millisecond)
	recon.RedispatchAfter, recon.MaxUndelivered = 3*time.Second, 0
	ctx := context.Background()
	if err := recon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recon.Stop)

	// The drain service of A and B (C is lost without one). Idle for
	// 10s, a worker leaves service: longer than a lapsed lease (3s) and
	// the reconciler's redispatch (3s) together, the time a worker may
	// go without a job while C's are taken over. At 3s, on a loaded CI
	// machine, B left mid-run in that gap and the test waited for it in
	// vain.
	for _, id := range []string{fleetA, fleetB} {
		w := exec.Command(conveyorBin, "worker", "watch", "--data-dir", up.DataDir, "--volume", agent.volumes[id], "--config", cfg,
			"--imds-endpoint", fake.IMDS(id), "--poll", "50ms", "--idle-stop", "10s", "--drain-timeout", "20s", "--protect")
		w.Env = cleanEnv("AWS_ACCESS_KEY_ID="+ssmtest.DefaultAccessKey, "AWS_SECRET_ACCESS_KEY=secret",
			"AWS_REGION="+ssmtest.DefaultRegion, "AWS_ENDPOINT_URL_AUTO_SCALING="+fake.URL)
		out := &syncBuffer{}
		w.Stdout, w.Stderr = out, out
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			w.Process.Signal(syscall.SIGTERM)
			w.Wait()
			if t.Failed() {
				t.Logf("worker watch %s:\n%s", id, out)
			}
		})
	}

	// 200 uploads, each a job of 50 to 300 ms, submitted as the Lambda does.
	rng := rand.New(rand.NewPCG(12, 1))
	submit := func(key string) string {
		oc := upload(t, up.S3, key, []byte(strconv.FormatFloat(0.05+0.25*rng.Float64(), 'f', 2, 64)))
		if r := o.Submit(ctx, oc); r.Err != nil {
			t.Fatalf("submit %s: %v", key, r.Err)
		}
		return objJobID(oc)
	}
	// Three quarters are uploaded first; the last quarter is uploaded
	// while B is scaled in, so that B still has work then however slowly
	// the test itself gets there (on a loaded CI machine A and B once
	// finished every job before the test looked for B at work).
	var ids []string
	for i := range fleetJobs * 3 / 4 {
		ids = append(ids, submit(fmt.Sprintf("fleet/%03d.txt", i)))
	}
	// waitBusy waits until the processor finished n jobs (its journal) and
	// instance id runs a job.
	waitBusy := func(n int, id string) {
		t.Helper()
		deadline := time.Now().Add(jobTimeout)
		for {
			b, _ := os.ReadFile(journal)
			if done := strings.Count(string(b), "\n"); done >= n && agent.runningOn(id) > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not %d jobs processed with one running on %s", n, id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// C is lost mid-job: its jobs' leases lapse and others take them over.
	waitBusy(fleetJobs/4, fleetC)
	// A worker run on C may be between jobs (starting, or looking for
	// held ones): C is killed once a record says it holds a job, and what
	// it held is read from the records again after the kill.
	// The candidates are read from C's volume (a work directory per job
	// in hand), not from all the records: a pass over 200 records on a
	// loaded machine outlasts the short jobs it looks for.
	for deadline := time.Now().Add(jobTimeout); heldBy(t, up, workDirs(t, agent.volumes[fleetC]), agent.volumes[fleetC]) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("C never held a job")
		}
	}
	fake.Kill(fleetC)
	agent.kill(fleetC)
	killedRunning := heldBy(t, up, workDirs(t, agent.volumes[fleetC]), agent.volumes[fleetC])

	// The last quarter is uploaded while the test waits for B at work.
	// (Not through submit and upload: they stop the test, which only
	// the test's own goroutine may do.)
	rest := make(chan []string, 1)
	go func() {
		var more []string
		defer func() { rest <- more }()
		for i := fleetJobs * 3 / 4; i < fleetJobs; i++ {
			key := fmt.Sprintf("fleet/%03d.txt", i)
			body := []byte(strconv.FormatFloat(0.05+0.25*rng.Float64(), 'f', 2, 64))
			out, err := up.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(inputBucket), Key: aws.String(key), Body: bytes.NewReader(body)})
			if err != nil {
				t.Errorf("put %s: %v", key, err)
				return
			}
			oc := s3event.ObjectCreated{EventName: "ObjectCreated:Put", Bucket: inputBucket, Key: key, Size: int64(len(body)),
				ETag: s3event.TrimETag(aws.ToString(out.ETag)), VersionID: aws.ToString(out.VersionId)}
			if r := o.Submit(ctx, oc); r.Err != nil {
				t.Errorf("submit %s: %v", key, r.Err)
				return
			}
			more = append(more, objJobID(oc))
		}
	}()

	// B is scaled in: it drains (its jobs handed back) before the group
	// may stop it.
	waitBusy(fleetJobs/2, fleetB)
	bRunning := agent.runningOn(fleetB)
	fake.ScaleIn(fleetB)
	deadline := time.Now().Add(jobTimeout)
	for len(fake.LifecycleActions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("B's lifecycle action was never completed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	act := fake.LifecycleActions()[0]
	if act.Instance != fleetB || act.Result != "CONTINUE" {
		t.Errorf("lifecycle action %+v, want B's CONTINUE", act)
	}
	// Whatever ran on B when the group let it go took no job: the drain
	// waited for the runs it had signalled, and a run started after the
	// mark refused its job.
	agent.mu.Lock()
	for _, e := range agent.ends[fleetB] {
		if e.at.After(act.At) && !strings.Contains(e.out, "leaving service") {
			t.Errorf("a worker run on B ended %s after the lifecycle action, having taken its job:\n%s", e.at.Sub(act.At), e.out)
		}
	}
	agent.mu.Unlock()
	t.Logf("B had %d worker runs when scaled in", bRunning)
	ids = append(ids, <-rest...)
	if len(ids) != fleetJobs {
		t.Fatalf("%d jobs submitted, want %d", len(ids), fleetJobs)
	}

	// Every job ends succeeded, by exactly one successful attempt.
	handbacks, crashes := 0, 0
	for _, id := range ids {
		r := waitState(t, up.S3, id, job.Succeeded, jobTimeout)
		ok := 0
		for _, a := range r.Attempts {
			if a.ExitCode != nil && *a.ExitCode == 0 && a.Error == "" {
				ok++
			} else {
				crashes++
			}
		}
		if ok != 1 {
			t.Errorf("job %s: %d successful attempts, want 1: %+v", id, ok, r.Attempts)
		}
		handbacks += r.Handbacks
	}
	t.Logf("%d jobs: %d handed back by B's drain, %d attempts lost with C (%d running when it died)", len(ids), handbacks, crashes, killedRunning)
	if killedRunning > 0 && crashes == 0 {
		t.Errorf("C died with %d jobs running but no attempt was closed as a crash", killedRunning)
	}

	// The load spread: no command waited at an agent (each found a free
	// slot on its worker, so no worker had a queue while another idled),
	// and each worker did a share before it left.
	for _, c := range fake.Commands() {
		if c.Busy >= fleetSlots {
			t.Errorf("command %s sent to %s with %d commands executing there: over its %d slots", c.ID, c.Instance, c.Busy, fleetSlots)
		}
	}
	for _, id := range []string{fleetA, fleetB, fleetC} {
		if fake.Peak(id) > fleetSlots {
			t.Errorf("%s ran %d commands at once, over its %d slots", id, fake.Peak(id), fleetSlots)
		}
		agent.mu.Lock()
		did := agent.doneBy[id]
		agent.mu.Unlock()
		// C dies a quarter of the way through: a twentieth each is a share.
		if did < fleetJobs/20 {
			t.Errorf("%s did %d jobs of %d: the load did not spread", id, did, fleetJobs)
		}
	}

	// Idle, A leaves service: the group is at zero, A stopped in the warm
	// pool with its volume.
	deadline = time.Now().Add(jobTimeout)
	for g := fake.GroupState(); g.Desired != 0 || len(g.InService) != 0; g = fake.GroupState() {
		if time.Now().After(deadline) {
			t.Fatalf("the idle fleet did not stop: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if inst, _ := fake.Instance(fleetA); inst.State != "stopped" {
		t.Errorf("A is %s, want stopped (kept, not terminated)", inst.State)
	}

	// The next upload raises the desired capacity; its job waits queued
	// while a worker starts, then runs.
	late := submit("fleet/after-idle.txt")
	waitState(t, up.S3, late, job.Succeeded, jobTimeout)
	if g := fake.GroupState(); g.Desired != 1 {
		t.Errorf("group after the late upload: %+v, want desired 1", g)
	}
}

// workDirs lists the job IDs with a work directory on the volume in dir.
func workDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "work"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if job.CheckID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// heldBy counts the jobs whose record is running under the volume in dir.
func heldBy(t *testing.T, up *upProc, ids []string, dir string) int {
	t.Helper()
	vol, err := volume.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, id := range ids {
		r, err := record(context.Background(), up.S3, id)
		if err != nil {
			continue // not created yet
		}
		if r.State == job.Running && job.VolumeOf(r.Owner) == vol.ID() {
			n++
		}
	}
	return n
}
