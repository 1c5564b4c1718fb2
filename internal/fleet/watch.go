package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/conveyorhq/conveyor/internal/volume"
)

// Defaults of Config.
const (
	DefaultPoll         = 5 * time.Second
	DefaultDrainTimeout = 90 * time.Second
	DefaultHook         = "conveyor-drain"
)

// Config configures a Watcher.
type Config struct {
	// Poll is how often IMDS is read. Spot gives two minutes' notice, so
	// keep it to seconds. Default DefaultPoll.
	Poll time.Duration
	// DrainTimeout bounds the wait for running jobs to hand back; a job
	// still running then is left to the lease (taken over as a crash).
	// Default DefaultDrainTimeout; keep it under the hook's heartbeat
	// timeout and the Spot notice.
	DrainTimeout time.Duration
	// Hook is the termination lifecycle hook's name. Default DefaultHook.
	Hook string
	// ReadyHook, when set, is the launch lifecycle hook the watcher
	// completes when it starts: the worker is set up and may serve. The
	// group runs that hook at every start from its warm pool, not only at
	// first boot, so the watch (a service started at every boot) is what
	// completes it.
	ReadyHook string
	// Group is the Auto Scaling group's name; "" reads it from IMDS (the
	// instance tag aws:autoscaling:groupName, with instance metadata tags
	// on).
	Group string
	// Protect keeps the instance protected from scale-in while any job
	// runs on it (SetInstanceProtection), so the group picks idle workers
	// to take out.
	Protect bool
	// IdleStop, when positive, takes the worker out of service after this
	// long with no job on it: it lowers the group's desired capacity by
	// one (the group then picks an unprotected, idle worker and returns it
	// to its warm pool, stopped, volume kept), down to zero. The
	// dispatcher sends jobs to the emptiest worker first, so a worker idle
	// this long has seen no queued job find it.
	IdleStop time.Duration
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Hook == "" {
		c.Hook = DefaultHook
	}
	return c
}

// Validate names the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Poll < 10*time.Millisecond || c.Poll > time.Minute:
		return fmt.Errorf("fleet.poll must be between 10ms and 1m, got %s", c.Poll)
	case c.DrainTimeout < time.Second || c.DrainTimeout > time.Hour:
		return fmt.Errorf("fleet.drain_timeout must be between 1s and 1h, got %s", c.DrainTimeout)
	case c.IdleStop < 0:
		return fmt.Errorf("fleet.idle_stop must be positive, or 0 for never, got %s", c.IdleStop)
	}
	return nil
}

// Metadata reads instance metadata paths ("instance-id",
// "autoscaling/target-lifecycle-state"); found is false for a path that
// does not exist (404).
type Metadata interface {
	Get(ctx context.Context, path string) (value string, found bool, err error)
}

// AutoScaling is the part of the Auto Scaling API the watcher calls, on
// its own instance only.
type AutoScaling interface {
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	SetDesiredCapacity(context.Context, *autoscaling.SetDesiredCapacityInput, ...func(*autoscaling.Options)) (*autoscaling.SetDesiredCapacityOutput, error)
	CompleteLifecycleAction(context.Context, *autoscaling.CompleteLifecycleActionInput, ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
	SetInstanceProtection(context.Context, *autoscaling.SetInstanceProtectionInput, ...func(*autoscaling.Options)) (*autoscaling.SetInstanceProtectionOutput, error)
}

// LogShipper uploads the job logs written on the volume since the last
// shipping; it runs after the jobs handed back.
type LogShipper func(ctx context.Context) (shipped int, err error)

// Departure is why a worker leaves service.
type Departure struct {
	Target string // the target lifecycle state: Terminated, Warmed:Stopped...; "" for Spot alone
	Spot   string // the Spot instance-action notice, "" without one
}

func (d Departure) String() string {
	var parts []string
	if d.Target != "" {
		parts = append(parts, "target lifecycle state "+d.Target)
	}
	if d.Spot != "" {
		parts = append(parts, "Spot interruption "+strings.TrimSpace(d.Spot))
	}
	return strings.Join(parts, ", ")
}

// leaving says whether a target lifecycle state takes the instance out of
// service: anything but InService and the Pending/Warmed entry states.
func leaving(target string) bool {
	switch target {
	case "", "InService", "Pending", "Pending:Wait", "Pending:Proceed":
		return false
	}
	return target == "Terminated" || target == "Detached" || target == "Standby" || strings.HasPrefix(target, "Warmed:")
}

// Watcher drains the worker when it leaves its Auto Scaling group.
type Watcher struct {
	cfg  Config
	md   Metadata
	asg  AutoScaling
	vol  *volume.Volume
	ship LogShipper
	log  *slog.Logger

	// Drained, if set, receives each completed drain (tests wait on it).
	Drained chan Departure
	// Now is the clock of the idle timer; nil is time.Now.
	Now func() time.Time

	instance  string
	protected bool
	drained   string    // the departure drained last, so it is drained once
	busyAt    time.Time // when a job last ran here (or the watch started)

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// New returns a Watcher of vol. asg may be nil for an instance outside
// a group (Spot notices are still drained).
func New(cfg Config, md Metadata, asg AutoScaling, vol *volume.Volume, ship LogShipper, log *slog.Logger) (*Watcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, md: md, asg: asg, vol: vol, ship: ship, log: log.With("component", "fleet")}, nil
}

// Start reads the instance's identity and polls until Stop or ctx ends.
// Calling it again is a no-op.
func (w *Watcher) Start(ctx context.Context) error {
	if w.done != nil {
		return nil
	}
	id, _, err := w.md.Get(ctx, "instance-id")
	if err != nil || id == "" {
		return fmt.Errorf("read the instance ID from IMDS: %v: run the watcher on the EC2 worker (IMDSv2 reachable)", err)
	}
	w.instance = id
	if w.cfg.Group == "" {
		g, _, err := w.md.Get(ctx, "tags/instance/aws:autoscaling:groupName")
		if err != nil {
			return fmt.Errorf("read the group name from IMDS: %w", err)
		}
		w.cfg.Group = g // "" outside a group: Spot notices only
	}
	if w.cfg.ReadyHook != "" && w.cfg.Group != "" && w.asg != nil {
		_, err := w.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
			AutoScalingGroupName: aws.String(w.cfg.Group), LifecycleHookName: aws.String(w.cfg.ReadyHook),
			InstanceId: aws.String(w.instance), LifecycleActionResult: aws.String("CONTINUE"),
		})
		if err != nil {
			// None pending: the watch restarted, not the instance.
			w.log.Info("ready hook not completed", "hook", w.cfg.ReadyHook, "error", err.Error())
		} else {
			w.log.Info("ready: lifecycle action completed", "hook", w.cfg.ReadyHook)
		}
	}
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(w.cfg.Poll)
		defer t.Stop()
		for {
			if err := w.Tick(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("watch", "error", err.Error())
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop ends the polling and waits for a drain in progress.
func (w *Watcher) Stop() {
	w.stopOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
			<-w.done
		}
	})
}

// Tick reads IMDS once and acts on it: drains on a departure (once per
// departure), clears the drain mark when back in service, and keeps the
// scale-in protection in step with the jobs running.
func (w *Watcher) Tick(ctx context.Context) error {
	target, _, err := w.md.Get(ctx, "autoscaling/target-lifecycle-state")
	if err != nil {
		return fmt.Errorf("read the target lifecycle state: %w", err)
	}
	spot, _, err := w.md.Get(ctx, "spot/instance-action")
	if err != nil {
		return fmt.Errorf("read the Spot instance action: %w", err)
	}
	d := Departure{Spot: spot}
	if leaving(target) {
		d.Target = target
	}
	if d.Target != "" || d.Spot != "" {
		if d.String() == w.drained {
			return nil
		}
		err := w.drain(ctx, d)
		// Drained once, whatever the group said: a departure without a
		// pending action (entering the warm pool) is not drained again.
		w.drained = d.String()
		if err != nil {
			return err
		}
		if w.Drained != nil {
			w.Drained <- d
		}
		return nil
	}
	if target == "InService" || target == "" {
		if w.drained != "" || w.vol.CheckDraining() != nil {
			w.log.Info("in service again: taking jobs", "instance", w.instance)
			if err := w.vol.Undrain(); err != nil {
				return err
			}
			w.drained = ""
			w.busyAt = w.now() // idle from now, not from before it left
		}
	}
	if target != "InService" || w.asg == nil || w.cfg.Group == "" {
		return nil
	}
	busy, err := w.busy()
	if err != nil {
		return err
	}
	if w.cfg.Protect {
		if err := w.protect(ctx, busy); err != nil {
			return err
		}
	}
	if w.cfg.IdleStop > 0 && !busy && w.now().Sub(w.busyAt) >= w.cfg.IdleStop {
		w.busyAt = w.now() // once per idle period: the departure follows on IMDS
		return w.leaveIdle(ctx)
	}
	return nil
}

func (w *Watcher) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// busy says whether a job runs here now, and notes when one last did.
func (w *Watcher) busy() (bool, error) {
	pids, err := w.vol.Runs()
	if err != nil {
		return false, err
	}
	if w.busyAt.IsZero() || len(pids) > 0 {
		w.busyAt = w.now()
	}
	return len(pids) > 0, nil
}

// leaveIdle lowers the group's desired capacity by one: the group takes
// out an unprotected (idle) worker, most likely this one, and the watch of
// that worker drains it when IMDS shows its departure.
func (w *Watcher) leaveIdle(ctx context.Context) error {
	out, err := w.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{w.cfg.Group}})
	if err != nil {
		return fmt.Errorf("read the group's desired capacity: %w", err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return fmt.Errorf("no Auto Scaling group %s", w.cfg.Group)
	}
	g := out.AutoScalingGroups[0]
	desired, minSize := aws.ToInt32(g.DesiredCapacity), aws.ToInt32(g.MinSize)
	if desired <= minSize {
		return nil
	}
	w.log.Info("idle: leaving service", "instance", w.instance, "idle_for", w.cfg.IdleStop, "desired", desired-1)
	_, err = w.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: aws.String(w.cfg.Group), DesiredCapacity: aws.Int32(desired - 1), HonorCooldown: aws.Bool(false),
	})
	if err != nil {
		return fmt.Errorf("lower the desired capacity to %d: %w", desired-1, err)
	}
	return nil
}

// drain takes the worker out: no new job, running ones handed back, logs
// shipped, then the lifecycle action completed.
func (w *Watcher) drain(ctx context.Context, d Departure) error {
	start := time.Now()
	w.log.Info("leaving service: draining", "instance", w.instance, "why", d.String())
	if err := w.vol.Drain(d.String()); err != nil {
		return err
	}
	n, err := w.vol.SignalRuns(syscall.SIGTERM)
	if err != nil {
		w.log.Warn("signal running jobs", "error", err.Error())
	}
	left := w.waitRuns(ctx)
	if left > 0 {
		w.log.Warn("jobs still running after the drain timeout: their leases lapse and they are taken over", "running", left, "timeout", w.cfg.DrainTimeout)
	}
	shipped := 0
	if w.ship != nil {
		if shipped, err = w.ship(ctx); err != nil {
			w.log.Warn("ship job logs", "error", err.Error())
		}
	}
	w.log.Info("drained", "signalled", n, "still_running", left, "logs_shipped", shipped, "took", time.Since(start).Round(time.Millisecond))
	if d.Target == "" || w.asg == nil || w.cfg.Group == "" {
		return nil // a Spot notice: the instance goes in two minutes whatever we say
	}
	_, err = w.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(w.cfg.Group),
		LifecycleHookName:     aws.String(w.cfg.Hook),
		InstanceId:            aws.String(w.instance),
		LifecycleActionResult: aws.String("CONTINUE"),
	})
	if err != nil {
		return fmt.Errorf("complete the lifecycle action (group %s, hook %s): %w; the group goes on at the hook's timeout", w.cfg.Group, w.cfg.Hook, err)
	}
	w.log.Info("lifecycle action completed", "group", w.cfg.Group, "hook", w.cfg.Hook)
	return nil
}

// waitRuns waits, up to DrainTimeout, for the registered runs to end and
// returns how many are left.
func (w *Watcher) waitRuns(ctx context.Context) int {
	deadline := time.Now().Add(w.cfg.DrainTimeout)
	for {
		pids, _ := w.vol.Runs()
		if len(pids) == 0 || !time.Now().Before(deadline) {
			return len(pids)
		}
		select {
		case <-ctx.Done():
			return len(pids)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// protect sets the instance's scale-in protection when whether jobs run
// changed.
func (w *Watcher) protect(ctx context.Context, busy bool) error {
	if busy == w.protected {
		return nil
	}
	_, err := w.asg.SetInstanceProtection(ctx, &autoscaling.SetInstanceProtectionInput{
		AutoScalingGroupName: aws.String(w.cfg.Group),
		InstanceIds:          []string{w.instance},
		ProtectedFromScaleIn: aws.Bool(busy),
	})
	if err != nil {
		return fmt.Errorf("set scale-in protection %v: %w", busy, err)
	}
	w.protected = busy
	return nil
}
