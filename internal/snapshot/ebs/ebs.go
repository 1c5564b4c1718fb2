package ebs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/conveyorhq/conveyor/internal/snapshot"
)

var _ snapshot.Driver = (*Driver)(nil)

// Defaults of Config.
const (
	DefaultPoll    = 5 * time.Second
	DefaultTimeout = 15 * time.Minute
)

// DefaultDevice is the device the workers' data volume is attached at.
const DefaultDevice = "/dev/sdf"

// Config names the worker and its data volume. InstanceID and VolumeID
// are needed by Create and Restore only: List and Clone work on every
// volume with the tags (ForWorker fills them in for one worker).
type Config struct {
	InstanceID string
	VolumeID   string // the data volume; Restore updates it
	Device     string // its device name on the instance; "" is DefaultDevice
	// Tags select the volume's snapshots and are set on new snapshots and
	// volumes; default Backup=True, as the DLM policy targets.
	Tags map[string]string
	// Poll is the interval between state checks; Timeout bounds each wait.
	Poll, Timeout time.Duration
	// Out receives one line per restore step.
	Out io.Writer
	// AutoScaling and Group, when set, name the workers' Auto Scaling
	// group: Restore puts an in-service worker in Standby before it stops
	// it (the group would otherwise replace the stopped instance) and
	// back in service once it runs again.
	AutoScaling *autoscaling.Client
	Group       string
}

// Driver drives EBS snapshots through the EC2 API.
type Driver struct {
	ec2 *ec2.Client
	cfg Config
}

// New returns a driver; client may point at any EC2 endpoint.
func New(client *ec2.Client, cfg Config) (*Driver, error) {
	if (cfg.InstanceID == "") != (cfg.VolumeID == "") {
		return nil, errors.New("ebs snapshots: give both the instance id and its data volume id, or neither")
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	if len(cfg.Tags) == 0 {
		cfg.Tags = map[string]string{"Backup": "True"}
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	return &Driver{ec2: client, cfg: cfg}, nil
}

// VolumeID is the current data volume (changed by Restore).
func (d *Driver) VolumeID() string { return d.cfg.VolumeID }

func (d *Driver) tagFilters() []types.Filter {
	keys := make([]string, 0, len(d.cfg.Tags))
	for k := range d.cfg.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var f []types.Filter
	for _, k := range keys {
		f = append(f, types.Filter{Name: aws.String("tag:" + k), Values: []string{d.cfg.Tags[k]}})
	}
	return f
}

func (d *Driver) tagSpec(rt types.ResourceType) []types.TagSpecification {
	return tagSpec(rt, d.cfg.Tags)
}

func tagSpec(rt types.ResourceType, m map[string]string) []types.TagSpecification {
	var tags []types.Tag
	for k, v := range m {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	sort.Slice(tags, func(i, j int) bool { return *tags[i].Key < *tags[j].Key })
	return []types.TagSpecification{{ResourceType: rt, Tags: tags}}
}

func fromEC2(s types.Snapshot) snapshot.Snapshot {
	out := snapshot.Snapshot{ID: aws.ToString(s.SnapshotId), Time: aws.ToTime(s.StartTime), Source: aws.ToString(s.VolumeId), State: string(s.State), Tags: map[string]string{}}
	out.Stats.Bytes = int64(aws.ToInt32(s.VolumeSize)) << 30
	for _, t := range s.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

func (d *Driver) needWorker() error {
	if d.cfg.InstanceID == "" {
		return errors.New("ebs snapshots: no worker instance given")
	}
	return nil
}

// List implements snapshot.Driver: the account's snapshots with the tags.
func (d *Driver) List(ctx context.Context) ([]snapshot.Snapshot, error) {
	var out []snapshot.Snapshot
	p := ec2.NewDescribeSnapshotsPaginator(d.ec2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: d.tagFilters()})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe snapshots: %w", err)
		}
		for _, s := range page.Snapshots {
			out = append(out, fromEC2(s))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// Create implements snapshot.Driver: it starts a snapshot of the data
// volume with the tags; State is "pending" until EBS completes it.
func (d *Driver) Create(ctx context.Context, _ snapshot.CreateOptions) (snapshot.Snapshot, error) {
	if err := d.needWorker(); err != nil {
		return snapshot.Snapshot{}, err
	}
	out, err := d.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{
		VolumeId:          aws.String(d.cfg.VolumeID),
		Description:       aws.String("conveyor snapshot of " + d.cfg.VolumeID),
		TagSpecifications: d.tagSpec(types.ResourceTypeSnapshot),
	})
	if err != nil {
		return snapshot.Snapshot{}, fmt.Errorf("create snapshot of %s: %w", d.cfg.VolumeID, err)
	}
	s := snapshot.Snapshot{ID: aws.ToString(out.SnapshotId), Time: aws.ToTime(out.StartTime), Source: d.cfg.VolumeID, State: string(out.State), Tags: d.cfg.Tags}
	return s, nil
}

// Delete implements snapshot.Driver.
func (d *Driver) Delete(ctx context.Context, ids ...string) error {
	for _, id := range ids {
		if _, err := d.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			if apiCode(err) == "InvalidSnapshot.NotFound" {
				return fmt.Errorf("%w: %s", snapshot.ErrNotFound, id)
			}
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
	}
	return nil
}
