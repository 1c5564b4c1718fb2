package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
	"github.com/conveyorhq/conveyor/internal/fleet"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// setupSingle is a group of one in-service worker, as the default stack.
func setupSingle(t *testing.T, cfg fleet.Config) bundle {
	t.Helper()
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: inst, State: "running", Ping: "Online", StartLatency: 20 * time.Millisecond}},
		Group:     &ssmtest.Group{Name: "conveyor-workers", Hook: fleet.DefaultHook, Min: 0, Max: 1, InService: []string{inst}},
	})
	vol, err := volume.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Poll = 20 * time.Millisecond
	w, err := fleet.New(cfg, fleet.NewIMDS(f.IMDS(inst)), f.AutoScaling(), vol, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Drained = make(chan fleet.Departure, 4)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return bundle{aws: f, vol: vol, w: w}
}

// An idle single worker leaves service after IdleStop: the desired
// capacity goes to zero, it drains and goes back to the warm pool,
// stopped with its volume; raising the capacity again (what the
// orchestrator does for the next upload) brings it back taking jobs.
func TestIdleWorkerStopsAndComesBack(t *testing.T) {
	t.Parallel()
	b := setupSingle(t, fleet.Config{IdleStop: 150 * time.Millisecond, Protect: true})
	start := time.Now()
	d := waitDrained(t, b)
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("left after %s, before IdleStop", took)
	}
	if d.Target != "Warmed:Stopped" {
		t.Errorf("departure %+v, want back to the warm pool", d)
	}
	g := b.aws.GroupState()
	if g.Desired != 0 || len(g.InService) != 0 || len(g.Warm) != 1 {
		t.Fatalf("group %+v, want desired 0 and the worker in the warm pool", g)
	}
	if i, _ := b.aws.Instance(inst); i.State != "stopped" {
		t.Errorf("instance %s, want stopped (not terminated)", i.State)
	}
	setDesired(t, b, 1)
	deadline := time.Now().Add(10 * time.Second)
	for b.vol.CheckDraining() != nil {
		if time.Now().After(deadline) {
			t.Fatal("back in service but still refusing jobs")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A worker with a job running does not stop, however long it runs.
func TestBusyWorkerStays(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	vol, err := volume.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, vol.Root(), "busy")
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: inst, State: "running", Ping: "Online"}},
		Group:     &ssmtest.Group{Name: "conveyor-workers", Hook: fleet.DefaultHook, Min: 0, Max: 1, InService: []string{inst}},
	})
	w, err := fleet.New(fleet.Config{Poll: 20 * time.Millisecond, IdleStop: 50 * time.Millisecond}, fleet.NewIMDS(f.IMDS(inst)), f.AutoScaling(), vol, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // several idle periods' worth of ticks
	w.Stop()
	if n := f.Calls("SetDesiredCapacity"); n != 0 {
		t.Errorf("SetDesiredCapacity called %d times with a job running", n)
	}
}

// The watch completes the ready hook when it starts: at every boot, since
// the group runs the launch hook again for a start from the warm pool.
func TestReadyHookAtStart(t *testing.T) {
	t.Parallel()
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: inst, State: "running", Ping: "Online"}},
		Group:     &ssmtest.Group{Name: "conveyor-workers", Hook: fleet.DefaultHook, ReadyHook: "conveyor-ready", Max: 1, InService: []string{inst}},
	})
	vol, err := volume.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := fleet.New(fleet.Config{Poll: time.Second, ReadyHook: "conveyor-ready"}, fleet.NewIMDS(f.IMDS(inst)), f.AutoScaling(), vol, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Stop()
	acts := f.LifecycleActions()
	if len(acts) != 1 || acts[0].Hook != "conveyor-ready" || acts[0].Instance != inst || acts[0].Result != "CONTINUE" {
		t.Errorf("lifecycle actions %+v, want the ready hook completed for %s", acts, inst)
	}
}
