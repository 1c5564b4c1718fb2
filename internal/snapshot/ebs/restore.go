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
// volume by a new one made from the snapshot. Steps: put the worker in
// Standby when its group holds it in service (cfg.Group), stop it (its
// worker hands its running jobs back), create the volume in its
// availability zone (encrypted, tagged like the volume it replaces, at
// least as big), detach the old volume (kept, so nothing is lost), attach
// the new one at the same device, start the instance and return it to
// service. A worker found stopped (in the group's warm pool, say) is left
// stopped. Each step is printed to cfg.Out; on failure the error says
// which step, and what is left where.
func (d *Driver) Restore(ctx context.Context, id string, _ snapshot.RestoreOptions) error {
	if err := d.needWorker(); err != nil {
		return err
	}
	step := func(format string, args ...any) { fmt.Fprintf(d.cfg.Out, format+"\n", args...) }
	snap, err := d.completed(ctx, id)
	if err != nil {
		return err
	}
	inst, err := d.instance(ctx)
	if err != nil {
		return err
	}
	az := aws.ToString(inst.Placement.AvailabilityZone)
	old := d.cfg.VolumeID
	oldVol, err := d.volume(ctx, old)
	if err != nil {
		return err
	}
	running := inst.State == nil || inst.State.Name != types.InstanceStateNameStopped
	standby := false
	// What to do by hand when a later step fails.
	back := "the instance was stopped already"
	if running {
		if standby, err = d.enterStandby(ctx, step); err != nil {
			return err
		}
		back = fmt.Sprintf("start instance %s", d.cfg.InstanceID)
		if standby {
			back += fmt.Sprintf(" and take it out of Standby (aws autoscaling exit-standby --auto-scaling-group-name %s --instance-ids %s)", d.cfg.Group, d.cfg.InstanceID)
		}
		step("stopping instance %s (its worker hands its running jobs back)", d.cfg.InstanceID)
		if _, err := d.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{d.cfg.InstanceID}}); err != nil {
			return fmt.Errorf("stop instance %s (to go back, %s): %w", d.cfg.InstanceID, back, err)
		}
		if err := d.wait(ctx, "instance "+d.cfg.InstanceID+" stopped", func() (bool, error) {
			i, err := d.instance(ctx)
			return err == nil && i.State != nil && i.State.Name == types.InstanceStateNameStopped, err
		}); err != nil {
			return fmt.Errorf("%w (to go back, %s)", err, back)
		}
	} else {
		step("instance %s is stopped: it is left stopped", d.cfg.InstanceID)
	}
	step("creating a volume from %s in %s", id, az)
	in := &ec2.CreateVolumeInput{
		SnapshotId: aws.String(id), AvailabilityZone: aws.String(az), VolumeType: types.VolumeTypeGp3,
		Encrypted: aws.Bool(true), TagSpecifications: tagSpec(types.ResourceTypeVolume, d.volumeTags(fromVolume(oldVol).Tags, map[string]string{TagRestoredFrom: id})),
	}
	copyShape(in, oldVol, snap)
	nv, err := d.ec2.CreateVolume(ctx, in)
	if err != nil {
		return fmt.Errorf("create volume from %s (nothing changed on %s; to go back, %s): %w", id, old, back, err)
	}
	newID := aws.ToString(nv.VolumeId)
	if err := d.waitVolume(ctx, newID, types.VolumeStateAvailable); err != nil {
		return fmt.Errorf("%w (nothing changed on %s; delete %s; to go back, %s)", err, old, newID, back)
	}
	step("detaching %s (it is kept; delete it once the restore is checked)", old)
	if _, err := d.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(old), InstanceId: aws.String(d.cfg.InstanceID)}); err != nil {
		return fmt.Errorf("detach %s (new volume %s is ready; to go back, delete it and %s): %w", old, newID, back, err)
	}
	if err := d.waitVolume(ctx, old, types.VolumeStateAvailable); err != nil {
		return err
	}
	step("attaching %s as %s", newID, d.cfg.Device)
	if _, err := d.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(newID), InstanceId: aws.String(d.cfg.InstanceID), Device: aws.String(d.cfg.Device)}); err != nil {
		return fmt.Errorf("attach %s (old volume %s is detached and intact: attach it again at %s, or %s, then %s): %w", newID, old, d.cfg.Device, newID, back, err)
	}
	if err := d.waitVolume(ctx, newID, types.VolumeStateInUse); err != nil {
		return err
	}
	d.cfg.VolumeID = newID
	if running {
		step("starting instance %s", d.cfg.InstanceID)
		if _, err := d.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{d.cfg.InstanceID}}); err != nil {
			return fmt.Errorf("start instance %s: %w", d.cfg.InstanceID, err)
		}
		if standby {
			if err := d.exitStandby(ctx, step); err != nil {
				return err
			}
		}
	}
	step("restored %s onto %s: data volume is now %s (old: %s, detached, kept)", id, d.cfg.InstanceID, newID, old)
	return nil
}

// completed returns the snapshot id, or ErrNotFound, or an error when it
// is not completed yet.
func (d *Driver) completed(ctx context.Context, id string) (types.Snapshot, error) {
	snaps, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if apiCode(err) == "InvalidSnapshot.NotFound" || apiCode(err) == "InvalidSnapshotID.Malformed" || (err == nil && len(snaps.Snapshots) == 0) {
		return types.Snapshot{}, fmt.Errorf("%w: %s", snapshot.ErrNotFound, id)
	}
	if err != nil {
		return types.Snapshot{}, fmt.Errorf("describe snapshot %s: %w", id, err)
	}
	if st := snaps.Snapshots[0].State; st != types.SnapshotStateCompleted {
		return types.Snapshot{}, fmt.Errorf("snapshot %s is %s; wait until it is completed", id, st)
	}
	return snaps.Snapshots[0], nil
}

// copyShape gives the new volume the old one's size (never less than the
// snapshot's), and its gp3 IOPS and throughput.
func copyShape(in *ec2.CreateVolumeInput, old types.Volume, snap types.Snapshot) {
	if size := aws.ToInt32(old.Size); size > aws.ToInt32(snap.VolumeSize) {
		in.Size = aws.Int32(size)
	}
	if old.VolumeType == types.VolumeTypeGp3 {
		in.Iops, in.Throughput = old.Iops, old.Throughput
	}
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
