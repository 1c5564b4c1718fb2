package ebs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tags Conveyor sets on the volumes it makes from a snapshot.
const (
	TagRestoredFrom = "conveyor:restored-from" // a worker's new data volume: the snapshot
	TagCloneOf      = "conveyor:clone-of"      // a clone: the snapshot
)

// Volume is an EBS volume and its attachment, as List's callers show it.
type Volume struct {
	ID       string
	AZ       string
	State    string // creating, available, in-use...
	SizeGiB  int32
	Instance string // attached to, "" when detached
	Device   string
	Tags     map[string]string
}

func fromVolume(v types.Volume) Volume {
	out := Volume{ID: aws.ToString(v.VolumeId), AZ: aws.ToString(v.AvailabilityZone), State: string(v.State), SizeGiB: aws.ToInt32(v.Size), Tags: map[string]string{}}
	for _, a := range v.Attachments {
		out.Instance, out.Device = aws.ToString(a.InstanceId), aws.ToString(a.Device)
	}
	for _, t := range v.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// Volumes returns the volumes among ids that still exist, by ID (a
// snapshot outlives its volume: the volume of a terminated worker is
// absent, not an error).
func (d *Driver) Volumes(ctx context.Context, ids []string) (map[string]Volume, error) {
	out := map[string]Volume{}
	for len(ids) > 0 {
		n := min(len(ids), 200) // EC2's limit of values per filter
		p := ec2.NewDescribeVolumesPaginator(d.ec2, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("volume-id"), Values: ids[:n]}}})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe volumes: %w", err)
			}
			for _, v := range page.Volumes {
				out[aws.ToString(v.VolumeId)] = fromVolume(v)
			}
		}
		ids = ids[n:]
	}
	return out, nil
}

func (d *Driver) volume(ctx context.Context, id string) (types.Volume, error) {
	out, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return types.Volume{}, fmt.Errorf("describe volume %s: %w", id, err)
	}
	if len(out.Volumes) == 0 {
		return types.Volume{}, fmt.Errorf("volume %s not found", id)
	}
	return out.Volumes[0], nil
}

// ForWorker returns a driver for one worker instance: its data volume is
// the one attached at cfg.Device.
func (d *Driver) ForWorker(ctx context.Context, instanceID string) (*Driver, error) {
	out, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}},
		{Name: aws.String("attachment.device"), Values: []string{d.cfg.Device}},
	}})
	if err != nil {
		return nil, fmt.Errorf("find the data volume of %s: %w", instanceID, err)
	}
	if len(out.Volumes) != 1 {
		return nil, fmt.Errorf("instance %s has no data volume at %s: is it a Conveyor worker?", instanceID, d.cfg.Device)
	}
	cfg := d.cfg
	cfg.InstanceID, cfg.VolumeID = instanceID, aws.ToString(out.Volumes[0].VolumeId)
	return &Driver{ec2: d.ec2, cfg: cfg}, nil
}

// volumeTags are the tags of a volume made from a snapshot: those of the
// volume it stands for (not the aws: ones, which only AWS sets), the
// driver's (the backup tag, so DLM keeps snapshotting it), then extra.
func (d *Driver) volumeTags(like map[string]string, extra map[string]string) map[string]string {
	tags := map[string]string{}
	for k, v := range like {
		if !strings.HasPrefix(k, "aws:") {
			tags[k] = v
		}
	}
	maps.Copy(tags, d.cfg.Tags)
	maps.Copy(tags, extra)
	return tags
}

// Clone makes a new volume from a completed snapshot, for a new instance
// to use: encrypted, gp3, tagged like the snapshot's volume (with the
// backup tag) plus TagCloneOf. az "" is the zone of the snapshot's volume
// when it still exists. The clone carries the original's volume identity
// file until the worker boot script mounts it on an instance: the script
// sees a file system made on another EBS volume and gives it a new
// identity (infra/userdata.go). It waits until the volume is available.
func (d *Driver) Clone(ctx context.Context, id, az string) (Volume, error) {
	snap, err := d.completed(ctx, id)
	if err != nil {
		return Volume{}, err
	}
	like := map[string]string{}
	for _, t := range snap.Tags {
		like[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	// DLM's own tags on the snapshot are not the volume's.
	for _, k := range []string{"dlm:managed", "conveyor:snapshot"} {
		delete(like, k)
	}
	delete(like, TagRestoredFrom)
	if src, err := d.Volumes(ctx, []string{aws.ToString(snap.VolumeId)}); err != nil {
		return Volume{}, err
	} else if v, ok := src[aws.ToString(snap.VolumeId)]; ok {
		maps.Copy(like, v.Tags)
		delete(like, TagRestoredFrom)
		if az == "" {
			az = v.AZ
		}
	}
	if az == "" {
		return Volume{}, errors.New("the snapshot's volume is gone: give the availability zone of the instance that will use the clone")
	}
	if like["Name"] != "" {
		like["Name"] += "-clone"
	}
	nv, err := d.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{
		SnapshotId: aws.String(id), AvailabilityZone: aws.String(az), VolumeType: types.VolumeTypeGp3,
		Encrypted: aws.Bool(true), TagSpecifications: tagSpec(types.ResourceTypeVolume, d.volumeTags(like, map[string]string{TagCloneOf: id})),
	})
	if err != nil {
		return Volume{}, fmt.Errorf("create a volume from %s in %s: %w", id, az, err)
	}
	newID := aws.ToString(nv.VolumeId)
	fmt.Fprintf(d.cfg.Out, "creating %s from %s in %s\n", newID, id, az)
	if err := d.waitVolume(ctx, newID, types.VolumeStateAvailable); err != nil {
		return Volume{}, fmt.Errorf("%w (the volume %s exists: delete it or wait)", err, newID)
	}
	v, err := d.volume(ctx, newID)
	if err != nil {
		return Volume{}, err
	}
	return fromVolume(v), nil
}

// enterStandby puts the worker in Standby when its group holds it in
// service: a stopped in-service instance is unhealthy, and the group would
// terminate it (and its volumes' attachments) and launch another. The
// desired capacity goes down by one meanwhile, so no replacement starts.
// It reports whether it did.
func (d *Driver) enterStandby(ctx context.Context, step func(string, ...any)) (bool, error) {
	if d.cfg.Group == "" || d.cfg.AutoScaling == nil {
		return false, nil
	}
	state, err := d.lifecycle(ctx)
	if err != nil || state != "InService" {
		if err == nil && state != "" && state != "Standby" {
			err = fmt.Errorf("worker %s is %s in group %s: restore it once it is InService, or stopped in the warm pool", d.cfg.InstanceID, state, d.cfg.Group)
		}
		return false, err
	}
	step("putting %s in Standby in group %s (desired capacity one less meanwhile)", d.cfg.InstanceID, d.cfg.Group)
	if _, err := d.cfg.AutoScaling.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
		AutoScalingGroupName: aws.String(d.cfg.Group), InstanceIds: []string{d.cfg.InstanceID}, ShouldDecrementDesiredCapacity: aws.Bool(true),
	}); err != nil {
		return false, fmt.Errorf("enter standby %s: %w", d.cfg.InstanceID, err)
	}
	return true, d.wait(ctx, d.cfg.InstanceID+" in Standby", func() (bool, error) {
		s, err := d.lifecycle(ctx)
		return s == "Standby", err
	})
}

// exitStandby waits for the started instance to run, then returns it to
// service (the desired capacity goes back up).
func (d *Driver) exitStandby(ctx context.Context, step func(string, ...any)) error {
	if err := d.wait(ctx, "instance "+d.cfg.InstanceID+" running", func() (bool, error) {
		i, err := d.instance(ctx)
		return err == nil && i.State != nil && i.State.Name == types.InstanceStateNameRunning, err
	}); err != nil {
		return fmt.Errorf("%w; once it runs: aws autoscaling exit-standby --auto-scaling-group-name %s --instance-ids %s", err, d.cfg.Group, d.cfg.InstanceID)
	}
	step("returning %s to service in group %s", d.cfg.InstanceID, d.cfg.Group)
	if _, err := d.cfg.AutoScaling.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String(d.cfg.Group), InstanceIds: []string{d.cfg.InstanceID}}); err != nil {
		return fmt.Errorf("exit standby %s (run aws autoscaling exit-standby --auto-scaling-group-name %s --instance-ids %s): %w", d.cfg.InstanceID, d.cfg.Group, d.cfg.InstanceID, err)
	}
	return nil
}

// lifecycle is the worker's lifecycle state in the group, "" when the
// group does not hold it.
func (d *Driver) lifecycle(ctx context.Context) (string, error) {
	out, err := d.cfg.AutoScaling.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.cfg.Group}})
	if err != nil {
		return "", fmt.Errorf("describe group %s: %w", d.cfg.Group, err)
	}
	for _, g := range out.AutoScalingGroups {
		for _, i := range g.Instances {
			if aws.ToString(i.InstanceId) == d.cfg.InstanceID {
				return string(i.LifecycleState), nil
			}
		}
	}
	return "", nil
}
