package ssm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

// SlotsTagKey is the instance tag that, when present, says how many jobs
// the worker runs at once (its volume's slots, the `workers` setting);
// without it a worker has one slot per vCPU, as `workers` defaults to.
const SlotsTagKey = "conveyor:slots"

// load is what the dispatcher knows of the online workers: their slots
// and the commands in flight on each. A snapshot serves the dispatches of
// LoadTTL, each counting its own send, so a burst of jobs costs a few AWS
// calls, not a few per job.
type load struct {
	at       time.Time
	nodes    []node         // the configured workers known to SSM
	online   []string       // online workers, sorted
	slots    map[string]int // per online worker
	inflight map[string]int // commands of the document not yet complete
}

// free is a worker's free slots.
func (l *load) free(id string) int { return l.slots[id] - l.inflight[id] }

// chooseByLoad returns the online worker with the most free slots; ties
// go to the job's hash among the tied, so equal workers share the work
// deterministically. It returns "" when every slot is taken.
func chooseByLoad(l *load, jobID string) string {
	best, tied := 0, []string(nil)
	for _, id := range l.online {
		switch f := l.free(id); {
		case f > best:
			best, tied = f, []string{id}
		case f == best && f > 0:
			tied = append(tied, id)
		}
	}
	if len(tied) == 0 {
		return ""
	}
	return tied[spread(jobID, len(tied))]
}

// fullError says that every online worker's slots are taken.
func fullError(l *load) error {
	var parts []string
	for _, id := range l.online {
		parts = append(parts, fmt.Sprintf("%s %d/%d", id, l.inflight[id], l.slots[id]))
	}
	return fmt.Errorf("%w: every slot of the online workers is taken (%s); the job stays queued and is sent again when one frees up",
		dispatch.ErrFull, strings.Join(parts, ", "))
}

// readLoad reads the slots and the commands in flight of the online
// nodes. d.mu is held.
func (d *Dispatcher) readLoad(ctx context.Context, nodes []node) (*load, error) {
	l := &load{at: time.Now(), nodes: nodes, slots: map[string]int{}, inflight: map[string]int{}}
	for _, n := range nodes {
		if n.ping == types.PingStatusOnline {
			l.online = append(l.online, n.id)
		}
	}
	if err := d.dropLeaving(ctx, l); err != nil {
		return nil, err
	}
	if len(l.online) == 0 {
		return l, nil
	}
	if err := d.readSlots(ctx, l); err != nil {
		return nil, err
	}
	if err := d.readInflight(ctx, l); err != nil {
		return nil, err
	}
	return l, nil
}

// readSlots fills l.slots from the instances' SlotsTagKey tag, else their
// vCPUs (CPU options), else Config.DefaultSlots.
func (d *Dispatcher) readSlots(ctx context.Context, l *load) error {
	for _, id := range l.online {
		l.slots[id] = d.cfg.DefaultSlots
	}
	if d.ec2 == nil {
		return nil
	}
	in := &ec2.DescribeInstancesInput{InstanceIds: l.online}
	for range maxPages {
		out, err := d.ec2.DescribeInstances(ctx, in, d.ec2Opts...)
		if err != nil {
			return d.explain("ec2:DescribeInstances", strings.Join(l.online, ","), err)
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if n := instanceSlots(inst); n > 0 {
					l.slots[aws.ToString(inst.InstanceId)] = n
				}
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	return nil
}

// instanceSlots is an instance's slots as its tag or CPU options say, 0
// when neither does.
func instanceSlots(inst ec2types.Instance) int {
	for _, t := range inst.Tags {
		if aws.ToString(t.Key) == SlotsTagKey {
			if n, err := strconv.Atoi(aws.ToString(t.Value)); err == nil && n > 0 {
				return n
			}
		}
	}
	if c := inst.CpuOptions; c != nil && aws.ToInt32(c.CoreCount) > 0 {
		return int(aws.ToInt32(c.CoreCount) * max(aws.ToInt32(c.ThreadsPerCore), 1))
	}
	return 0
}

// readInflight counts, per instance, the invocations of Conveyor's
// document that have not completed (Pending, Delayed, InProgress): one
// listing for the whole fleet, bounded to the commands recent enough to
// still run.
func (d *Dispatcher) readInflight(ctx context.Context, l *load) error {
	after := time.Now().Add(-d.cfg.DeliveryTimeout - d.cfg.ExecutionTimeout).UTC().Format(time.RFC3339)
	in := &ssm.ListCommandInvocationsInput{
		Filters: []types.CommandFilter{
			{Key: types.CommandFilterKeyExecutionStage, Value: aws.String("Executing")},
			{Key: types.CommandFilterKeyDocumentName, Value: aws.String(d.cfg.DocumentName)},
			{Key: types.CommandFilterKeyInvokedAfter, Value: aws.String(after)},
		},
		MaxResults: aws.Int32(50),
	}
	for range maxPages * 10 {
		out, err := d.ssm.ListCommandInvocations(ctx, in, d.ssmOpts...)
		if err != nil {
			return d.explain("ssm:ListCommandInvocations", "", err)
		}
		for _, inv := range out.CommandInvocations {
			l.inflight[aws.ToString(inv.InstanceId)]++
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	return nil
}

// dropLeaving takes out of l.online the workers the Auto Scaling group is
// taking out of service (a scale-in waiting on the drain hook): they take
// no more jobs. Instances outside the group are left as they are.
func (d *Dispatcher) dropLeaving(ctx context.Context, l *load) error {
	if d.cfg.AutoScalingGroup == "" || d.asg == nil || len(l.online) == 0 {
		return nil
	}
	out, err := d.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.cfg.AutoScalingGroup}}, d.asgOpts...)
	if err != nil {
		return d.explain("autoscaling:DescribeAutoScalingGroups", d.cfg.AutoScalingGroup, err)
	}
	leaving := map[string]bool{}
	for _, g := range out.AutoScalingGroups {
		for _, inst := range g.Instances {
			if inst.LifecycleState != "InService" {
				leaving[aws.ToString(inst.InstanceId)] = true
			}
		}
	}
	kept := l.online[:0]
	for _, id := range l.online {
		if !leaving[id] {
			kept = append(kept, id)
		}
	}
	l.online = kept
	return nil
}
