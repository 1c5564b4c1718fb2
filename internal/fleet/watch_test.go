package fleet_test

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/fleet"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// A child process of the test binary plays a `worker run`: registered on
// the volume, it hands back on SIGTERM (leaves a file saying so).
func TestMain(m *testing.M) {
	if root := os.Getenv("FLEET_TEST_RUN"); root != "" {
		vol, err := volume.Open(root)
		if err != nil {
			os.Exit(2)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		run, err := vol.RegisterRun()
		if err != nil {
			os.Exit(2)
		}
		os.WriteFile(filepath.Join(root, "ready-"+os.Getenv("FLEET_TEST_NAME")), nil, 0o644)
		<-sig
		os.WriteFile(filepath.Join(root, "handed-back-"+os.Getenv("FLEET_TEST_NAME")), nil, 0o644)
		run.Done()
		os.Exit(1)
	}
	os.Exit(m.Run())
}

const (
	inst  = "i-0aaaaaaaaaaaaaaa1"
	other = "i-0bbbbbbbbbbbbbbb2"
)

// startRun starts a fake `worker run` on root and waits until registered.
func startRun(t *testing.T, root, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FLEET_TEST_RUN="+root, "FLEET_TEST_NAME="+name)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go cmd.Wait()
	for range 500 {
		if _, err := os.Stat(filepath.Join(root, "ready-"+name)); err == nil {
			return cmd
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the fake run did not start")
	return nil
}

type bundle struct {
	aws   *ssmtest.Server
	vol   *volume.Volume
	s3    *s3test.Server
	state string
	w     *fleet.Watcher
}

func setup(t *testing.T, cfg fleet.Config) bundle {
	t.Helper()
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: inst, State: "running", Ping: "Online"},
			{ID: other, State: "running", Ping: "Online"},
		},
		Group: &ssmtest.Group{Name: "conveyor-workers", Hook: fleet.DefaultHook, Min: 0, Max: 2, InService: []string{inst, other}},
	})
	vol, err := volume.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := s3test.Start(t)
	state := srv.Bucket(t, "state")
	cfg.Poll = 20 * time.Millisecond
	cfg.DrainTimeout = 10 * time.Second
	w, err := fleet.New(cfg, fleet.NewIMDS(f.IMDS(inst)), f.AutoScaling(), vol, fleet.ShipLogs(srv.Client, state, vol), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Drained = make(chan fleet.Departure, 4)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return bundle{aws: f, vol: vol, s3: srv, state: state, w: w}
}

func waitDrained(t *testing.T, b bundle) fleet.Departure {
	t.Helper()
	select {
	case d := <-b.w.Drained:
		return d
	case <-time.After(20 * time.Second):
		t.Fatal("no drain")
	}
	return fleet.Departure{}
}

// A scale-in drains before the group may stop the instance: new runs are
// refused, running ones are signalled and hand back, the job logs are
// shipped, and only then is the lifecycle action completed. Back in
// service from the warm pool, the worker takes jobs again.
func TestScaleInDrainsBeforeCompleting(t *testing.T) {
	t.Parallel()
	b := setup(t, fleet.Config{})
	root := b.vol.Root()
	const jobID = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(root, "logs", jobID+".log"), []byte("processor said hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startRun(t, root, "a")
	startRun(t, root, "b")

	b.aws.ScaleIn(inst)
	d := waitDrained(t, b)
	if d.Target != "Warmed:Stopped" {
		t.Errorf("departure %+v, want target Warmed:Stopped", d)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(root, "handed-back-"+name)); err != nil {
			t.Errorf("run %s was not signalled to hand back before the lifecycle action completed", name)
		}
	}
	if err := b.vol.CheckDraining(); err == nil {
		t.Error("the volume is not marked draining: a run starting now would take a job")
	}
	out, err := b.s3.Client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(b.state), Key: aws.String("logs/" + jobID + ".log")})
	if err != nil {
		t.Errorf("job log not shipped: %v", err)
	} else {
		out.Body.Close()
	}
	acts := b.aws.LifecycleActions()
	if len(acts) == 1 {
		acts[0].At = time.Time{}
	}
	if len(acts) != 1 || acts[0] != (ssmtest.LifecycleAction{Group: "conveyor-workers", Hook: fleet.DefaultHook, Instance: inst, Result: "CONTINUE"}) {
		t.Errorf("lifecycle actions %+v, want one CONTINUE for %s", acts, inst)
	}
	if g := b.aws.GroupState(); len(g.Warm) != 1 || g.Warm[0] != inst {
		t.Errorf("group %+v: the instance is not back in the warm pool", g)
	}

	// The group starts it again from the warm pool: the mark goes.
	// (the dispatcher raises the capacity; here the test does)
	setDesired(t, b, 2)
	deadline := time.Now().Add(10 * time.Second)
	for b.vol.CheckDraining() != nil {
		if time.Now().After(deadline) {
			t.Fatal("still marked draining in service")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setDesired(t *testing.T, b bundle, n int32) {
	t.Helper()
	_, err := b.aws.AutoScaling().SetDesiredCapacity(context.Background(), &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: aws.String("conveyor-workers"), DesiredCapacity: aws.Int32(n)})
	if err != nil {
		t.Fatal(err)
	}
}

// A Spot interruption notice drains too; no lifecycle action is
// completed for it (the instance goes in two minutes regardless).
func TestSpotInterruptionDrains(t *testing.T) {
	t.Parallel()
	b := setup(t, fleet.Config{})
	startRun(t, b.vol.Root(), "spot")
	b.aws.SpotInterrupt(inst)
	d := waitDrained(t, b)
	if d.Spot == "" || d.Target != "" {
		t.Errorf("departure %+v, want the Spot notice", d)
	}
	if _, err := os.Stat(filepath.Join(b.vol.Root(), "handed-back-spot")); err != nil {
		t.Error("the run was not signalled")
	}
	if n := len(b.aws.LifecycleActions()); n != 0 {
		t.Errorf("%d lifecycle actions for a Spot notice", n)
	}
}

// With Protect, the instance is protected from scale-in while a job runs
// and released once none does.
func TestProtectWhileJobsRun(t *testing.T) {
	t.Parallel()
	b := setup(t, fleet.Config{Protect: true})
	cmd := startRun(t, b.vol.Root(), "p")
	waitProtected := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if i, _ := b.aws.Instance(inst); i.Protected == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("protection never became %v", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitProtected(true)
	cmd.Process.Signal(syscall.SIGTERM)
	waitProtected(false)
}
