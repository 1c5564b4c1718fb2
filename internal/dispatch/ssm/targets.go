package ssm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

// onlinePollInterval is how often Dispatch asks SSM whether a worker it
// started is online yet. Tests shorten it.
var onlinePollInterval = 2 * time.Second

// maxPages bounds the listing of workers: 20 pages of 50 is far more
// workers than one orchestrator feeds.
const maxPages = 20

// node is one managed instance as SSM sees it.
type node struct {
	id   string
	ping types.PingStatus
}

// pickTarget returns the instance to send jobID to, starting a stopped
// worker when configured to, and counts the send on the load.
func (d *Dispatcher) pickTarget(ctx context.Context, jobID string) (string, error) {
	id, nodes, err := d.chooseOnline(ctx, jobID, false)
	if id != "" || err != nil {
		return id, err
	}
	if !d.cfg.StartStopped {
		return "", d.noneOnline(nodes)
	}
	starting, err := d.startWorker(ctx, jobID)
	if err != nil {
		return "", err
	}
	if len(starting) == 0 {
		return "", fmt.Errorf("%w; and no stopped worker to start", d.noneOnline(nodes))
	}
	return d.waitOnline(ctx, jobID, starting)
}

// chooseOnline picks the online worker with the most free slots and counts
// one more command on it. It returns "" and the nodes when none is online,
// and an error wrapping dispatch.ErrFull when all their slots are taken.
// fresh forces a new reading of the load.
func (d *Dispatcher) chooseOnline(ctx context.Context, jobID string, fresh bool) (string, []node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.load
	if fresh || l == nil || d.cfg.LoadTTL < 0 || time.Since(l.at) >= d.cfg.LoadTTL {
		nodes, err := d.managedNodes(ctx)
		if err != nil {
			return "", nil, err
		}
		if l, err = d.readLoad(ctx, nodes); err != nil {
			return "", nil, err
		}
		d.load = l
	}
	if len(l.online) == 0 {
		d.load = nil // nothing to keep: the next dispatch asks again
		return "", l.nodes, nil
	}
	id := chooseByLoad(l, jobID)
	if id == "" {
		return "", l.nodes, fullError(l)
	}
	l.inflight[id]++
	return id, l.nodes, nil
}

// unsent takes back the command counted on id by chooseOnline: SSM
// refused it.
func (d *Dispatcher) unsent(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.load != nil && d.load.inflight[id] > 0 {
		d.load.inflight[id]--
	}
}

// spread maps a job ID onto one of n choices.
func spread(jobID string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return int(h.Sum32() % uint32(n))
}

// managedNodes lists the configured workers known to SSM, sorted by ID.
func (d *Dispatcher) managedNodes(ctx context.Context) ([]node, error) {
	filter := types.InstanceInformationStringFilter{Key: aws.String("InstanceIds"), Values: []string{d.cfg.InstanceID}}
	if d.cfg.InstanceID == "" {
		filter = types.InstanceInformationStringFilter{Key: aws.String("tag:" + d.cfg.TagKey), Values: []string{d.cfg.TagValue}}
	}
	in := &ssm.DescribeInstanceInformationInput{Filters: []types.InstanceInformationStringFilter{filter}, MaxResults: aws.Int32(50)}
	var nodes []node
	for range maxPages {
		out, err := d.ssm.DescribeInstanceInformation(ctx, in, d.ssmOpts...)
		var notManaged *types.InvalidInstanceId
		if errors.As(err, &notManaged) {
			return nil, nil // the fixed instance is unknown to SSM: none online
		}
		if err != nil {
			return nil, d.explain("ssm:DescribeInstanceInformation", d.cfg.InstanceID, err)
		}
		for _, info := range out.InstanceInformationList {
			nodes = append(nodes, node{id: aws.ToString(info.InstanceId), ping: info.PingStatus})
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].id < nodes[j].id })
	return nodes, nil
}

// noneOnline explains why no worker can take a job now.
func (d *Dispatcher) noneOnline(nodes []node) error {
	if d.cfg.InstanceID != "" {
		if len(nodes) == 0 {
			return fmt.Errorf("%w: instance %s is not a managed instance in SSM: check the SSM agent and the instance profile", dispatch.ErrUnavailable, d.cfg.InstanceID)
		}
		return fmt.Errorf("%w: instance %s is not online in SSM (PingStatus %s): it may be stopped (StartStopped starts it) or its SSM agent is down", dispatch.ErrUnavailable, d.cfg.InstanceID, nodes[0].ping)
	}
	if len(nodes) == 0 {
		return fmt.Errorf("%w: no managed instance in SSM is tagged %s=%s: check the tag, the SSM agent and the instance profile", dispatch.ErrUnavailable, d.cfg.TagKey, d.cfg.TagValue)
	}
	var states []string
	for _, n := range nodes {
		states = append(states, n.id+" "+string(n.ping))
	}
	return fmt.Errorf("%w: none of the workers tagged %s=%s is online in SSM (%s)", dispatch.ErrUnavailable, d.cfg.TagKey, d.cfg.TagValue, strings.Join(states, ", "))
}

// startWorker makes sure a worker is on its way up and returns the
// workers that are: those already pending, else one stopped worker it
// starts, else those running in EC2 whose agent has not checked in yet.
func (d *Dispatcher) startWorker(ctx context.Context, jobID string) ([]string, error) {
	if d.cfg.AutoScalingGroup != "" {
		return d.raiseCapacity(ctx)
	}
	byState, err := d.ec2States(ctx)
	if err != nil {
		return nil, err
	}
	if p := byState[ec2types.InstanceStateNamePending]; len(p) > 0 {
		return p, nil
	}
	if stopped := byState[ec2types.InstanceStateNameStopped]; len(stopped) > 0 {
		id := stopped[spread(jobID, len(stopped))]
		_, err := d.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}, d.ec2Opts...)
		if err != nil {
			return nil, d.explain("ec2:StartInstances", id, err)
		}
		return []string{id}, nil
	}
	return byState[ec2types.InstanceStateNameRunning], nil
}

// ec2States lists the configured workers by EC2 state, IDs sorted.
func (d *Dispatcher) ec2States(ctx context.Context) (map[ec2types.InstanceStateName][]string, error) {
	in := &ec2.DescribeInstancesInput{}
	if d.cfg.InstanceID != "" {
		in.InstanceIds = []string{d.cfg.InstanceID}
	} else {
		in.Filters = []ec2types.Filter{
			{Name: aws.String("tag:" + d.cfg.TagKey), Values: []string{d.cfg.TagValue}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopped"}},
		}
	}
	byState := map[ec2types.InstanceStateName][]string{}
	for range maxPages {
		out, err := d.ec2.DescribeInstances(ctx, in, d.ec2Opts...)
		if err != nil {
			return nil, d.explain("ec2:DescribeInstances", d.cfg.InstanceID, err)
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if inst.State != nil {
					byState[inst.State.Name] = append(byState[inst.State.Name], aws.ToString(inst.InstanceId))
				}
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	for _, ids := range byState {
		sort.Strings(ids)
	}
	return byState, nil
}

// waitOnline polls SSM until a worker is online, for at most WaitOnline.
func (d *Dispatcher) waitOnline(ctx context.Context, jobID string, starting []string) (string, error) {
	deadline := time.Now().Add(d.cfg.WaitOnline)
	for d.cfg.WaitOnline > 0 {
		wait := min(onlinePollInterval, time.Until(deadline))
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("wait for worker %s to come online: %w", strings.Join(starting, ", "), ctx.Err())
		case <-t.C:
		}
		id, _, err := d.chooseOnline(ctx, jobID, true)
		if id != "" || err != nil {
			return id, err
		}
	}
	return "", fmt.Errorf("%w: worker %s is starting and not yet online in SSM after %s; the event will be retried (if it stays offline, check its SSM agent and instance profile)",
		dispatch.ErrUnavailable, strings.Join(starting, ", "), max(d.cfg.WaitOnline, 0))
}
