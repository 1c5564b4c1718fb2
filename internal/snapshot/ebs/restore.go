package ebs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

// Restore implements snapshot.Driver: it replaces the instance's data
// volume by a new one made from the snapshot. Steps: stop the instance,
// create the volume in its availability zone (gp3, encrypted, tagged),
// detach the old volume (kept, so nothing is lost), attach the new one at
// the same device, start the instance. Each step is printed to cfg.Out;
// on failure the error says which step, and what is left where.
func (d *Driver) Restore(ctx context.Context, id string, _ snapshot.RestoreOptions) error {
	step := func(format string, args ...any) { fmt.Fprintf(d.cfg.Out, format+"\n", args...) }
	snaps, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if apiCode(err) == "InvalidSnapshot.NotFound" || (err == nil && len(snaps.Snapshots) == 0) {
		return fmt.Errorf("%w: %s", snapshot.ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("describe snapshot %s: %w", id, err)
	}
	if st := snaps.Snapshots[0].State; st != types.SnapshotStateCompleted {
		return fmt.Errorf("snapshot %s is %s; wait until it is completed", id, st)
	}
	inst, err := d.instance(ctx)
	if err != nil {
		return err
	}
	az := aws.ToString(inst.Placement.AvailabilityZone)
	old := d.cfg.VolumeID

	step("stopping instance %s", d.cfg.InstanceID)
	if _, err := d.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{d.cfg.InstanceID}}); err != nil {
		return fmt.Errorf("stop instance %s: %w", d.cfg.InstanceID, err)
	}
	if err := d.wait(ctx, "instance "+d.cfg.InstanceID+" stopped", func() (bool, error) {
		i, err := d.instance(ctx)
		return err == nil && i.State != nil && i.State.Name == types.InstanceStateNameStopped, err
	}); err != nil {
		return err
	}
	step("creating a volume from %s in %s", id, az)
	nv, err := d.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{
		SnapshotId: aws.String(id), AvailabilityZone: aws.String(az), VolumeType: types.VolumeTypeGp3,
		Encrypted: aws.Bool(true), TagSpecifications: d.tagSpec(types.ResourceTypeVolume),
	})
	if err != nil {
		return fmt.Errorf("create volume from %s (instance %s is stopped; start it to go back): %w", id, d.cfg.InstanceID, err)
	}
	newID := aws.ToString(nv.VolumeId)
	if err := d.waitVolume(ctx, newID, types.VolumeStateAvailable); err != nil {
		return err
	}
	step("detaching %s (it is kept; delete it once the restore is checked)", old)
	if _, err := d.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(old), InstanceId: aws.String(d.cfg.InstanceID)}); err != nil {
		return fmt.Errorf("detach %s (new volume %s is ready): %w", old, newID, err)
	}
	if err := d.waitVolume(ctx, old, types.VolumeStateAvailable); err != nil {
		return err
	}
	step("attaching %s as %s", newID, d.cfg.Device)
	if _, err := d.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(newID), InstanceId: aws.String(d.cfg.InstanceID), Device: aws.String(d.cfg.Device)}); err != nil {
		return fmt.Errorf("attach %s (old volume %s is detached and intact): %w", newID, old, err)
	}
	if err := d.waitVolume(ctx, newID, types.VolumeStateInUse); err != nil {
		return err
	}
	d.cfg.VolumeID = newID
	step("starting instance %s", d.cfg.InstanceID)
	if _, err := d.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{d.cfg.InstanceID}}); err != nil {
		return fmt.Errorf("start instance %s: %w", d.cfg.InstanceID, err)
	}
	step("restored %s onto %s: data volume is now %s (old: %s)", id, d.cfg.InstanceID, newID, old)
	return nil
}

func (d *Driver) instance(ctx context.Context) (types.Instance, error) {
	out, err := d.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.cfg.InstanceID}})
	if err != nil {
		return types.Instance{}, fmt.Errorf("describe instance %s: %w", d.cfg.InstanceID, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			return i, nil
		}
	}
	return types.Instance{}, fmt.Errorf("instance %s not found", d.cfg.InstanceID)
}

func (d *Driver) waitVolume(ctx context.Context, id string, want types.VolumeState) error {
	return d.wait(ctx, "volume "+id+" "+string(want), func() (bool, error) {
		out, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		if err != nil {
			return false, fmt.Errorf("describe volume %s: %w", id, err)
		}
		return len(out.Volumes) == 1 && out.Volumes[0].State == want, nil
	})
}

// wait polls cond every cfg.Poll until it holds, for at most cfg.Timeout.
func (d *Driver) wait(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d.cfg.Timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not reached within %s", what, d.cfg.Timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.cfg.Poll):
		}
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
