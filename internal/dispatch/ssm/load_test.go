package ssm

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/dispatch/dispatchtest"
	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
)

// perInstance counts the commands sent to each instance.
func perInstance(f *ssmtest.Server) map[string]int {
	n := map[string]int{}
	for _, c := range f.Commands() {
		n[c.Instance]++
	}
	return n
}

// Jobs go to the worker with the most free slots, never beyond a worker's
// slots (its vCPUs, or its conveyor:slots tag), and a job that finds every
// slot taken is not sent: ErrFull, which callers also see as unavailable.
func TestDispatchByLoad(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{-1, time.Minute} {
		t.Run("LoadTTL="+ttl.String(), func(t *testing.T) {
			t.Parallel()
			cfg := tagged(testConfig())
			cfg.LoadTTL = ttl
			slotsTag := map[string]string{"conveyor:role": "worker", SlotsTagKey: "3"}
			d, f := setup(t, cfg, []ssmtest.Instance{
				{ID: worker1, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 2},
				{ID: worker2, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 4},
				{ID: worker3, Tags: slotsTag, State: "running", Ping: "Online", VCPUs: 8},
			})
			for i := range 9 {
				if _, err := d.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
					t.Fatalf("Dispatch %d: %v", i, err)
				}
				// The most free slots first: after each send, no worker has
				// two more free slots than another that got the job.
			}
			want := map[string]int{worker1: 2, worker2: 4, worker3: 3}
			if diff := cmp.Diff(want, perInstance(f)); diff != "" {
				t.Errorf("commands per worker (-want +got):\n%s", diff)
			}
			_, err := d.Dispatch(context.Background(), dispatchtest.ID(99))
			if !errors.Is(err, dispatch.ErrFull) || !errors.Is(err, dispatch.ErrUnavailable) || !strings.Contains(err.Error(), worker2+" 4/4") {
				t.Fatalf("Dispatch with every slot taken = %v, want ErrFull naming the load", err)
			}
			if n := len(f.Commands()); n != 9 {
				t.Errorf("%d commands sent, want 9: a full fleet gets nothing more", n)
			}
			wantReads := 10
			if ttl > 0 {
				wantReads = 1 // one reading, then the dispatcher counts its own sends
			}
			if n := f.Calls("ListCommandInvocations"); n != wantReads {
				t.Errorf("ListCommandInvocations called %d times, want %d", n, wantReads)
			}
		})
	}
}

// The first jobs go to the emptiest worker: one with commands in flight
// from elsewhere (another orchestrator, an earlier container) gets the
// job only once the other has as few free slots.
func TestPrefersTheEmptiestWorker(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	cfg := tagged(testConfig())
	cfg.LoadTTL = -1
	d, f := setupWith(t, cfg, ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: worker1, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 4},
			{ID: worker2, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 4},
		},
		Agent: func(ssmtest.Command) string { <-release; return "Success" },
	})
	// Three commands already run on worker1.
	sc, _ := f.Clients()
	for i := range 3 {
		if _, err := sc.SendCommand(context.Background(), &awsssm.SendCommandInput{
			DocumentName: aws.String("conveyor-run-job"), InstanceIds: []string{worker1},
			Parameters:     map[string][]string{ParamJobID: {dispatchtest.ID(100 + i)}, ParamExecutionTimeout: {"7200"}},
			TimeoutSeconds: aws.Int32(300), Comment: aws.String("conveyor job " + dispatchtest.ID(100+i)),
			CloudWatchOutputConfig: &types.CloudWatchOutputConfig{CloudWatchOutputEnabled: true, CloudWatchLogGroupName: aws.String("/conveyor/commands")},
		}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for i := range 4 {
		if _, err := d.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
			t.Fatalf("Dispatch %d: %v", i, err)
		}
		cs := f.Commands()
		got = append(got, cs[len(cs)-1].Instance)
	}
	// worker2 has 4 free, worker1 1: worker2 takes three, then they tie.
	if diff := cmp.Diff([]string{worker2, worker2, worker2}, got[:3]); diff != "" {
		t.Errorf("first three jobs went to (-want +got):\n%s", diff)
	}
	if n := f.Peak(worker1); n > 4 {
		t.Errorf("worker1 ran %d commands at once, over its 4 slots", n)
	}
}

// A slot that frees up is used: once a command completes, the next
// dispatch finds the worker again.
func TestFreedSlotIsUsed(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	gates := map[string]chan struct{}{}
	gate := func(job string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if gates[job] == nil {
			gates[job] = make(chan struct{})
		}
		return gates[job]
	}
	cfg := testConfig()
	cfg.LoadTTL = -1
	d, f := setupWith(t, cfg, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online", VCPUs: 1}},
		Agent:     func(c ssmtest.Command) string { <-gate(c.JobID); return "Success" },
	})
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(2)); !errors.Is(err, dispatch.ErrFull) {
		t.Fatalf("second Dispatch = %v, want ErrFull", err)
	}
	close(gate(dispatchtest.ID(1)))
	f.Wait()
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(2)); err != nil {
		t.Fatalf("Dispatch after the slot freed up: %v", err)
	}
	close(gate(dispatchtest.ID(2)))
}

// The fake agent runs at most its CommandWorkersLimit at once, whatever
// was sent: why user data raises the limit to the volume's slots.
func TestAgentLimit(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	cfg := testConfig()
	d, f := setupWith(t, cfg, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online", VCPUs: 8, AgentLimit: 2}},
		Agent:     func(ssmtest.Command) string { <-release; return "Success" },
	})
	for i := range 6 {
		if _, err := d.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.Running(worker1); n != 2 {
		t.Errorf("the agent runs %d commands, want its limit 2", n)
	}
	close(release)
	f.Wait()
	if n := f.Peak(worker1); n != 2 {
		t.Errorf("peak %d commands at once, want 2", n)
	}
	for _, c := range f.Commands() {
		if c.Status != "Success" {
			t.Errorf("command %s ended %s, want Success once a worker freed up", c.ID, c.Status)
		}
	}
}

// SSM accepts a command for a stopped instance; it stays pending and
// times out when the instance is not started within the delivery timeout.
func TestCommandForStoppedInstanceTimesOut(t *testing.T) {
	t.Parallel()
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{{ID: worker1, State: "stopped", Ping: "ConnectionLost"}},
		Agent:     func(ssmtest.Command) string { return "Success" },
	})
	sc, _ := f.Clients()
	ctx := context.Background()
	if _, err := sc.SendCommand(ctx, &awsssm.SendCommandInput{DocumentName: aws.String("d"), InstanceIds: []string{worker1}, TimeoutSeconds: aws.Int32(30)}); err != nil {
		t.Fatalf("SendCommand to a stopped instance: %v", err)
	}
	list := func() types.CommandInvocation {
		out, err := sc.ListCommandInvocations(ctx, &awsssm.ListCommandInvocationsInput{InstanceId: aws.String(worker1)})
		if err != nil || len(out.CommandInvocations) != 1 {
			t.Fatalf("ListCommandInvocations = %+v, %v", out, err)
		}
		return out.CommandInvocations[0]
	}
	if got := list().Status; got != types.CommandInvocationStatusPending {
		t.Errorf("status %s, want Pending", got)
	}
	f.Advance(31 * time.Second)
	if inv := list(); inv.Status != types.CommandInvocationStatusTimedOut || aws.ToString(inv.StatusDetails) != "DeliveryTimedOut" {
		t.Errorf("status %s (%s), want TimedOut (DeliveryTimedOut)", inv.Status, aws.ToString(inv.StatusDetails))
	}
	f.SetInstance(worker1, "terminated", "ConnectionLost")
	if _, err := sc.SendCommand(ctx, &awsssm.SendCommandInput{DocumentName: aws.String("d"), InstanceIds: []string{worker1}}); err == nil {
		t.Error("SendCommand to a terminated instance was accepted")
	}
}

// With an Auto Scaling group whose workers all sit stopped in the warm
// pool, a job raises the desired capacity to one (the group starts a
// worker: the dispatcher never starts a group's instance itself) and goes
// to that worker once it is online.
func TestRaisesDesiredCapacity(t *testing.T) {
	t.Parallel()
	cfg := tagged(testConfig())
	cfg.StartStopped, cfg.AutoScalingGroup = true, "conveyor-workers"
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: worker1, Tags: workerTag, State: "stopped", Ping: "ConnectionLost", StartLatency: 30 * time.Millisecond},
			{ID: worker2, Tags: workerTag, State: "stopped", Ping: "ConnectionLost", StartLatency: 30 * time.Millisecond},
		},
		Group: &ssmtest.Group{Name: "conveyor-workers", Hook: "conveyor-drain", Min: 0, Max: 2, Warm: []string{worker1, worker2}},
	})
	sc, ec := f.Clients()
	d, err := New(cfg, sc, ec, WithAutoScaling(f.AutoScaling()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(1)); err != nil {
		t.Fatalf("Dispatch: %v", err)
	}
	if g := f.GroupState(); g.Desired != 1 || len(g.InService) != 1 {
		t.Errorf("group %+v, want desired 1 with one instance in service", g)
	}
	if n := f.Calls("StartInstances"); n != 0 {
		t.Errorf("StartInstances called %d times: the group starts its instances", n)
	}
	// A second job while the first worker is up does not raise it again.
	if _, err := d.Dispatch(context.Background(), dispatchtest.ID(2)); err != nil {
		t.Fatalf("second Dispatch: %v", err)
	}
	if n := f.Calls("SetDesiredCapacity"); n != 1 {
		t.Errorf("SetDesiredCapacity called %d times, want 1", n)
	}
	if _, err := New(cfg, sc, ec); err == nil || !strings.Contains(err.Error(), "Auto Scaling client") {
		t.Errorf("New without the Auto Scaling client = %v, want an error saying so", err)
	}
}

// Concurrent dispatches never take the same slot twice: a send chosen but
// not yet in SSM's listing counts.
func TestConcurrentDispatchesKeepToSlots(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.LoadTTL = -1
	d, f := setup(t, cfg, []ssmtest.Instance{{ID: worker1, State: "running", Ping: "Online", VCPUs: 4}})
	var wg sync.WaitGroup
	var full atomic.Int32
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Dispatch(context.Background(), dispatchtest.ID(i))
			switch {
			case errors.Is(err, dispatch.ErrFull):
				full.Add(1)
			case err != nil:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := len(f.Commands()); n != 4 || full.Load() != 16 {
		t.Errorf("%d sent, %d full; want 4 and 16", n, full.Load())
	}
}

// A worker the group is taking out of service (its drain hook pending)
// gets no more jobs, though its agent is still online.
func TestSkipsLeavingWorkers(t *testing.T) {
	t.Parallel()
	cfg := tagged(testConfig())
	cfg.AutoScalingGroup, cfg.LoadTTL = "conveyor-workers", -1
	f := ssmtest.New(t, ssmtest.Options{
		Instances: []ssmtest.Instance{
			{ID: worker1, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 4},
			{ID: worker2, Tags: workerTag, State: "running", Ping: "Online", VCPUs: 4},
		},
		Group: &ssmtest.Group{Name: "conveyor-workers", Hook: "conveyor-drain", Max: 2, InService: []string{worker1, worker2}},
	})
	sc, ec := f.Clients()
	d, err := New(cfg, sc, ec, WithAutoScaling(f.AutoScaling()))
	if err != nil {
		t.Fatal(err)
	}
	f.ScaleIn(worker2)
	for i := range 3 {
		if _, err := d.Dispatch(context.Background(), dispatchtest.ID(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := perInstance(f); got[worker2] != 0 || got[worker1] != 3 {
		t.Errorf("commands per worker %v, want all on %s while %s leaves", got, worker1, worker2)
	}
}
