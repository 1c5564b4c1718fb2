package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/natsserver"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// natsCluster is a `conveyor up --nats embedded --workers 0` and the
// `conveyor worker serve` processes that share its jobs, each on its own
// volume, in its own process group.
type natsCluster struct {
	t       *testing.T
	up      *upProc
	dir     string
	natsURL string
	config  string // the workers' conveyor.yaml
	env     []string
	journal string

	mu      sync.Mutex
	workers []*serveProc
}

type serveProc struct {
	volume string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// startNATSCluster starts up (coordinating only) with the processor
// script body, which appends "start|end <volume dir> <job>" lines to
// c.journal around its work.
func startNATSCluster(t *testing.T, slots int, procBody string) *natsCluster {
	return startNATSClusterUp(t, slots, 0, procBody)
}

// startNATSClusterUp is startNATSCluster with upWorkers job slots in up.
func startNATSClusterUp(t *testing.T, slots, upWorkers int, procBody string) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	c := &natsCluster{t: t, dir: dir, journal: filepath.Join(dir, "journal")}
	proc := writeScript(t, dir, "proc.sh", `vol=$(dirname "$(dirname "$CONVEYOR_WORK_DIR")")
echo "start $vol $CONVEYOR_JOB_ID" >> `+c.journal+`
`+procBody+`
echo "done by $CONVEYOR_JOB_ID" > "$CONVEYOR_OUTPUT_DIR/out.txt"
echo "end $vol $CONVEYOR_JOB_ID" >> `+c.journal+`
`)
	natsPort := freePort(t)
	common := fmt.Sprintf("processor:\n  command: [%q]\nworker:\n  lease: 3s\nretry:\n  backoff: 200ms\n", proc)
	c.up = startUp(t, upOptions{
		Config: common + fmt.Sprintf("cluster:\n  nats_addr: 127.0.0.1:%d\n", natsPort),
		Args:   []string{"--nats", "embedded", "--workers", fmt.Sprint(upWorkers)},
		Env:    []string{"CONVEYOR_RECONCILE_INTERVAL=1s"},
	})
	c.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	if !strings.Contains(c.up.stdout.String(), c.natsURL) {
		t.Fatalf("conveyor up does not print the NATS URL %s for workers:\n%s", c.natsURL, c.up.stdout)
	}
	credPath := filepath.Join(c.up.DataDir, "nats-credentials.json")
	st, err := os.Stat(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", credPath, st.Mode().Perm())
	}
	var creds struct{ User, Password string }
	b, _ := os.ReadFile(credPath)
	if err := json.Unmarshal(b, &creds); err != nil || creds.User == "" || creds.Password == "" {
		t.Fatalf("%s: %v %q", credPath, err, b)
	}
	if strings.Contains(c.up.stdout.String()+c.up.stderr.String(), creds.Password) {
		t.Error("conveyor up printed the NATS password")
	}
	// The workers reach S3 and NATS as remote ones do: endpoint and
	// credentials from the environment, never on the command line.
	c.config = filepath.Join(dir, "worker.yaml")
	if err := os.WriteFile(c.config, []byte(common+fmt.Sprintf("workers: %d\n", slots)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.env = []string{
		"CONVEYOR_S3_ENDPOINT=" + c.up.Endpoint,
		"CONVEYOR_S3_ACCESS_KEY_ID=" + c.up.Creds.AccessKeyID,
		"CONVEYOR_S3_SECRET_ACCESS_KEY=" + c.up.Creds.SecretAccessKey,
		"CONVEYOR_CLUSTER_NATS_USER=" + creds.User,
		"CONVEYOR_CLUSTER_NATS_PASSWORD=" + creds.Password,
	}
	return c
}

// serve starts one `conveyor worker serve` on a new volume and waits
// until it pulls.
func (c *natsCluster) serve(name string, env ...string) *serveProc {
	t := c.t
	t.Helper()
	w := &serveProc{volume: filepath.Join(c.dir, "vol-"+name), out: &syncBuffer{}, exited: make(chan struct{})}
	w.cmd = exec.Command(conveyorBin, "worker", "serve", "--nats", c.natsURL, "--volume", w.volume, "--config", c.config,
		"--data-dir", filepath.Join(c.dir, "data-"+name))
	w.cmd.Env = cleanEnv(append(c.env, env...)...)
	w.cmd.Dir = c.dir
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(stopTimeout):
			t.Errorf("worker serve %s did not exit within %s of SIGTERM", name, stopTimeout)
			syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
			<-w.exited
		}
		if t.Failed() {
			t.Logf("worker serve %s:\n%s", name, w.out)
		}
	})
	for deadline := time.Now().Add(readyTimeout); !strings.Contains(w.out.String(), "pulling jobs from NATS stream"); {
		select {
		case <-w.exited:
			t.Fatalf("worker serve %s exited: %s", name, w.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker serve %s did not start pulling within %s:\n%s", name, readyTimeout, w.out)
		}
		time.Sleep(pollEvery)
	}
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w
}

// journalLine is one line of the processors' journal.
type journalLine struct{ event, volume, job string }

func (c *natsCluster) readJournal() []journalLine {
	b, _ := os.ReadFile(c.journal)
	var out []journalLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			// The processor sees a directory inside the volume: name the
			// worker's volume it lies in.
			c.mu.Lock()
			for _, w := range c.workers {
				if strings.HasPrefix(f[1]+"/", w.volume+"/") {
					f[1] = w.volume
				}
			}
			c.mu.Unlock()
			out = append(out, journalLine{f[0], f[1], f[2]})
		}
	}
	return out
}

// TestNATSWorkersShareJobs: `conveyor up --nats embedded --workers 0`
// coordinates and three `conveyor worker serve` on their own volumes (two
// slots each) share 300 jobs: each does some, none runs more than its
// slots at once, every job succeeds by exactly one attempt and its
// processor ran once.
func TestNATSWorkersShareJobs(t *testing.T) {
	t.Parallel()
	const jobs, slots = 300, 2
	c := startNATSCluster(t, slots, "sleep 0.05")
	var ws []*serveProc
	for _, n := range []string{"a", "b", "c"} {
		ws = append(ws, c.serve(n))
	}
	var ids []string
	for i := range jobs {
		ids = append(ids, put(t, c.up.S3, fmt.Sprintf("nats/%03d.txt", i), []byte(fmt.Sprintf("file %d\n", i))))
	}
	for _, id := range ids {
		r := waitState(t, c.up.S3, id, job.Succeeded, 3*jobTimeout)
		if len(r.Attempts) != 1 || r.Attempts[0].ExitCode == nil || *r.Attempts[0].ExitCode != 0 {
			t.Errorf("job %s: attempts %+v, want one successful", id, r.Attempts)
		}
		if out := mustGet(t, c.up.S3, outputBucket, r.Key+"/out.txt"); string(out) != "done by "+id+"\n" {
			t.Errorf("job %s output %q", id, out)
		}
	}
	// The journal: every job's processor ran once; per volume, never more
	// than its slots at once; every worker did a share.
	runs, running, peak, did := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	for _, l := range c.readJournal() {
		switch l.event {
		case "start":
			runs[l.job]++
			running[l.volume]++
			peak[l.volume] = max(peak[l.volume], running[l.volume])
		case "end":
			running[l.volume]--
			did[l.volume]++
		}
	}
	for _, id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %s: its processor ran %d times, want once", id, runs[id])
		}
	}
	var shares []string
	for _, w := range ws {
		shares = append(shares, fmt.Sprintf("%s: %d jobs, peak %d", filepath.Base(w.volume), did[w.volume], peak[w.volume]))
		if did[w.volume] == 0 {
			t.Errorf("worker on %s did no job of %d", w.volume, jobs)
		}
		if peak[w.volume] > slots {
			t.Errorf("worker on %s ran %d jobs at once, over its %d slots", w.volume, peak[w.volume], slots)
		}
	}
	sort.Strings(shares)
	t.Logf("%d jobs shared: %s", jobs, strings.Join(shares, "; "))
}

// TestNATSWorkerKilledMidJob: a `worker serve` killed outright (kill -9 of
// its process group, its processor included) mid-job: the job's message
// comes back once its lease lapsed, another worker takes it over, and it
// ends succeeded by one successful attempt, the lost one closed as a
// crash.
func TestNATSWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	c := startNATSCluster(t, 1, `case "$(cat "$CONVEYOR_INPUT")" in slow*) sleep 4;; esac`)
	a := c.serve("a")
	id := put(t, c.up.S3, "nats/slow.txt", []byte("slow\n"))
	r := waitRecord(t, c.up.S3, id, jobTimeout, "running", func(r *job.Record) bool { return r.State == job.Running })
	volA, err := volume.Open(a.volume)
	if err != nil {
		t.Fatal(err)
	}
	if job.VolumeOf(r.Owner) != volA.ID() {
		t.Fatalf("job running under %s, want worker a's volume %s", r.Owner, volA.ID())
	}
	b := c.serve("b")
	for deadline := time.Now().Add(jobTimeout); len(c.readJournal()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the processor never started on a")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.exited
	killed := time.Now()

	r = waitState(t, c.up.S3, id, job.Succeeded, 3*jobTimeout)
	ok, crashed := 0, 0
	volB, err := volume.Open(b.volume)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range r.Attempts {
		switch {
		case at.ExitCode != nil && *at.ExitCode == 0 && at.Error == "":
			ok++
			if job.VolumeOf(at.Owner) != volB.ID() {
				t.Errorf("the successful attempt ran on %s, want b's volume %s", at.Owner, volB.ID())
			}
			t.Logf("kill -9 of worker a -> attempt started on b after %s (lease 3s, ack wait 4.5s)", at.StartedAt.Sub(killed).Round(10*time.Millisecond))
		default:
			crashed++
		}
	}
	if ok != 1 || crashed != 1 {
		t.Errorf("attempts %+v: want the crashed one on a and one successful on b", r.Attempts)
	}
	var starts int
	for _, l := range c.readJournal() {
		if l.event == "start" {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("the processor started %d times, want twice (killed on a, then on b)", starts)
	}
}

// TestNATSUpWorkersShareTheQueue: with --nats and workers of its own, up
// runs jobs from the same stream as a `worker serve`: both take some.
func TestNATSUpWorkersShareTheQueue(t *testing.T) {
	t.Parallel()
	const jobs = 40
	c := startNATSClusterUp(t, 2, 2, "sleep 0.1")
	w := c.serve("a")
	var ids []string
	for i := range jobs {
		ids = append(ids, put(t, c.up.S3, fmt.Sprintf("mixed/%02d.txt", i), []byte(fmt.Sprintf("file %d\n", i))))
	}
	volA, err := volume.Open(w.volume)
	if err != nil {
		t.Fatal(err)
	}
	byServe := 0
	for _, id := range ids {
		r := waitState(t, c.up.S3, id, job.Succeeded, 2*jobTimeout)
		if len(r.Attempts) != 1 {
			t.Errorf("job %s: %d attempts, want 1", id, len(r.Attempts))
		}
		if job.VolumeOf(r.Owner) == volA.ID() || len(r.Attempts) > 0 && job.VolumeOf(r.Attempts[0].Owner) == volA.ID() {
			byServe++
		}
	}
	t.Logf("%d jobs: %d by worker serve, %d by up's own workers", jobs, byServe, jobs-byServe)
	if byServe == 0 || byServe == jobs {
		t.Errorf("worker serve did %d of %d jobs: the queue was not shared", byServe, jobs)
	}
}

// TestNATSWorkerStopHandsBack: SIGTERM to a `worker serve` mid-job hands
// the job back at once (not after the lease): another worker runs it, and
// the stop is not counted as a failed attempt.
func TestNATSWorkerStopHandsBack(t *testing.T) {
	t.Parallel()
	c := startNATSCluster(t, 1, `case "$(cat "$CONVEYOR_INPUT")" in slow*) [ -e "$CONVEYOR_WORK_DIR/../../../../stopped" ] || sleep 30;; esac`)
	a := c.serve("a")
	id := put(t, c.up.S3, "nats/stop.txt", []byte("slow\n"))
	waitRecord(t, c.up.S3, id, jobTimeout, "running", func(r *job.Record) bool { return r.State == job.Running })
	b := c.serve("b")
	// A processor started from now on (b's, once a handed the job back)
	// finishes at once; a's checked for the marker before it existed.
	if err := os.WriteFile(filepath.Join(filepath.Dir(b.volume), "stopped"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("worker serve a did not exit within %s of SIGTERM:\n%s", stopTimeout, a.out)
	}
	if !strings.Contains(a.out.String(), "handed back") {
		t.Errorf("worker serve a did not say it hands jobs back:\n%s", a.out)
	}
	r := waitState(t, c.up.S3, id, job.Succeeded, jobTimeout)
	if r.Handbacks != 1 {
		t.Errorf("record: %d handbacks, want 1 (the stop of a)", r.Handbacks)
	}
	volB, err := volume.Open(b.volume)
	if err != nil {
		t.Fatal(err)
	}
	last := r.Attempts[len(r.Attempts)-1]
	if job.VolumeOf(last.Owner) != volB.ID() || last.ExitCode == nil || *last.ExitCode != 0 {
		t.Errorf("last attempt %+v, want a successful one on b", last)
	}
	if r.Attempt > 1 && len(r.Attempts) != r.Handbacks+1 {
		t.Errorf("attempts %+v (attempt count %d): the hand-back counted as a failure", r.Attempts, r.Attempt)
	}
}

// TestNATSUpExternalServer: `conveyor up --nats nats://...` uses an
// existing NATS server (with credentials from the environment) instead of
// running one: its jobs travel through that server's stream.
func TestNATSUpExternalServer(t *testing.T) {
	t.Parallel()
	srv, err := natsserver.Start(natsserver.Config{StoreDir: filepath.Join(t.TempDir(), "nats"), Addr: "127.0.0.1:0", User: "ext", Password: "ext-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	up := startUp(t, upOptions{
		Args: []string{"--nats", srv.ClientURL(), "--workers", "2", "--processor", "noop"},
		Env:  []string{"CONVEYOR_CLUSTER_NATS_USER=ext", "CONVEYOR_CLUSTER_NATS_PASSWORD=ext-secret", "CONVEYOR_CLUSTER_NATS_STREAM=EXT_JOBS"},
	})
	if !strings.Contains(up.stdout.String(), srv.ClientURL()) {
		t.Errorf("conveyor up does not print the NATS URL %s:\n%s", srv.ClientURL(), up.stdout)
	}
	if _, err := os.Stat(filepath.Join(up.DataDir, "nats")); err == nil {
		t.Error("conveyor up ran an embedded NATS server although a URL was given")
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, put(t, up.S3, fmt.Sprintf("ext/%d.txt", i), []byte(fmt.Sprintf("ext %d\n", i))))
	}
	for _, id := range ids {
		waitState(t, up.S3, id, job.Succeeded, jobTimeout)
	}
	nc, err := natsgo.Connect(srv.ClientURL(), srv.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(context.Background(), "EXT_JOBS", "conveyor-workers")
	if err != nil {
		t.Fatalf("the shared consumer on the external server's stream EXT_JOBS: %v", err)
	}
	// A message is acknowledged just after its job's outcome is recorded.
	info, err := cons.Info(context.Background())
	for deadline := time.Now().Add(jobTimeout); err == nil && info.NumAckPending != 0 && time.Now().Before(deadline); {
		time.Sleep(pollEvery)
		info, err = cons.Info(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Stream < uint64(len(ids)) || info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer on the external server: delivered up to stream seq %d, %d pending, %d unacked; want every job's message delivered and acked",
			info.Delivered.Stream, info.NumPending, info.NumAckPending)
	}
}

// TestNATSRedeliveryToABusyJobIsNotLost: worker a holds a job under a
// 30 s lease, but the shared consumer's ack wait is set by worker b's 3 s
// lease, so a's message is redelivered to b while a is alive and renewing.
// b must neither run the job nor acknowledge the message away: the job
// ends succeeded by a's single attempt, its processor ran once, and the
// message is settled only after that.
func TestNATSRedeliveryToABusyJobIsNotLost(t *testing.T) {
	t.Parallel()
	c := startNATSCluster(t, 1, `case "$(cat "$CONVEYOR_INPUT")" in slow*) sleep 12;; esac`)
	a := c.serve("a", "CONVEYOR_WORKER_LEASE=30s")
	id := put(t, c.up.S3, "nats/busy.txt", []byte("slow\n"))
	waitRecord(t, c.up.S3, id, jobTimeout, "running", func(r *job.Record) bool { return r.State == job.Running })
	b := c.serve("b")
	if !strings.Contains(b.out.String(), "give every worker the same worker.lease") {
		t.Errorf("worker b did not warn that the workers' leases differ:\n%s", b.out)
	}
	r := waitState(t, c.up.S3, id, job.Succeeded, 2*jobTimeout)
	volA, err := volume.Open(a.volume)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Attempts) != 1 || job.VolumeOf(r.Attempts[0].Owner) != volA.ID() {
		t.Errorf("attempts %+v, want one, by a", r.Attempts)
	}
	starts := 0
	for _, l := range c.readJournal() {
		if l.event == "start" {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("the processor started %d times, want once", starts)
	}
	// The case under test happened: b was handed the job while a held it.
	if !strings.Contains(b.out.String(), "job "+id+" is held by another live worker") {
		t.Errorf("worker b never got the job's message while a held it (the test did not test):\n%s", b.out)
	}
}
