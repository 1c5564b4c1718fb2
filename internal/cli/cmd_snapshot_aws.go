package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/conveyorhq/conveyor/internal/snapshot"
	"github.com/conveyorhq/conveyor/internal/snapshot/ebs"
)

// On AWS (--stack), the worker volumes' snapshots are EBS snapshots taken
// by the stack's Data Lifecycle Manager policy (infra/backup.go): they are
// listed and restored through the EBS driver, never the local engine.

// Stack parameters and outputs the AWS snapshot commands read
// (infra/params.go, infra/fleet.go).
const (
	stackParamBackupKey   = "BackupTagKey"
	stackParamBackupValue = "BackupTagValue"
	stackOutputGroup      = "WorkerGroupName"
	defaultBackupKey      = "Backup"
	defaultBackupValue    = "True"
)

// awsSnapshots opens the EBS driver on the stack's worker volumes: the
// snapshots carrying the stack's backup tag, the workers' group for
// Standby. getenv supplies AWS_ENDPOINT_URL_EC2 and
// AWS_ENDPOINT_URL_AUTO_SCALING.
func awsSnapshots(ctx context.Context, o *snapshotOptions, c FileConfig) (*ebs.Driver, error) {
	st, err := describeStack(ctx, c, c.getenv)
	if err != nil {
		return nil, err
	}
	getenv := c.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	key, value := st.parameters[stackParamBackupKey], st.parameters[stackParamBackupValue]
	if key == "" {
		key, value = defaultBackupKey, defaultBackupValue
	}
	ec2c := ec2.NewFromConfig(st.aws, func(o *ec2.Options) {
		if ep := getenv("AWS_ENDPOINT_URL_EC2"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
	})
	asg := autoscaling.NewFromConfig(st.aws, func(o *autoscaling.Options) {
		if ep := getenv("AWS_ENDPOINT_URL_AUTO_SCALING"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
	})
	cfg := ebs.Config{Tags: map[string]string{key: value}, Out: o.Err, Group: st.outputs[stackOutputGroup], AutoScaling: asg}
	if d := getenv("CONVEYOR_EBS_POLL"); d != "" { // tests: the fake moves at each call
		if cfg.Poll, err = time.ParseDuration(d); err != nil {
			return nil, usageErrorf("CONVEYOR_EBS_POLL: %v", err)
		}
	}
	return ebs.New(ec2c, cfg)
}

// awsSnapshot is one line of `snapshot list --stack`.
type awsSnapshot struct {
	snapshot.Snapshot
	// Worker is the instance the snapshot's volume is attached to now,
	// "" when the volume is detached or gone.
	Worker string `json:"worker"`
	// VolumeState is the volume's state now, "deleted" when it is gone.
	VolumeState string `json:"volume_state"`
}

func runSnapshotListAWS(ctx context.Context, o *snapshotOptions, c FileConfig) error {
	d, err := awsSnapshots(ctx, o, c)
	if err != nil {
		return err
	}
	list, err := d.List(ctx)
	if err != nil {
		return err
	}
	var ids []string
	seen := map[string]bool{}
	for _, s := range list {
		if !seen[s.Source] {
			seen[s.Source] = true
			ids = append(ids, s.Source)
		}
	}
	vols, err := d.Volumes(ctx, ids)
	if err != nil {
		return err
	}
	out := []awsSnapshot{}
	for _, s := range list {
		a := awsSnapshot{Snapshot: s, VolumeState: "deleted"}
		if v, ok := vols[s.Source]; ok {
			a.Worker, a.VolumeState = v.Instance, v.State
		}
		out = append(out, a)
	}
	if o.output == "json" {
		return o.printJSON(out)
	}
	return printAWSSnapshots(o.Out, out)
}

func printAWSSnapshots(w io.Writer, list []awsSnapshot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tVOLUME\tWORKER\tSIZE\tSTATE")
	for _, s := range list {
		worker := s.Worker
		if worker == "" {
			worker = "- (volume " + s.VolumeState + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Time.Local().Format("2006-01-02 15:04:05"), s.Source, worker, humanBytes(s.Stats.Bytes), s.State)
	}
	return tw.Flush()
}

func runSnapshotRestoreAWS(ctx context.Context, o *snapshotOptions, c FileConfig, id string) error {
	if o.to != "" || o.inPlace {
		return usageErrorf("with --stack, restore with --worker INSTANCE-ID or --clone; --to and --in-place are for the local engine")
	}
	if (o.worker == "") == !o.clone {
		return usageErrorf("give exactly one of --worker INSTANCE-ID (a new data volume for that worker) or --clone (a new volume for a new instance)")
	}
	if o.az != "" && !o.clone {
		return usageErrorf("--az is for --clone: a worker's volume is made in the worker's zone")
	}
	d, err := awsSnapshots(ctx, o, c)
	if err != nil {
		return err
	}
	if o.clone {
		v, err := d.Clone(ctx, id, o.az)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return o.printJSON(v)
		}
		fmt.Fprintf(o.Out, "clone of %s: volume %s in %s (%d GiB, encrypted)\n", id, v.ID, v.AZ, v.SizeGiB)
		fmt.Fprintf(o.Out, "attach it at %s to an instance in %s; the worker boot script gives it a new volume identity at its first mount\n", ebs.DefaultDevice, v.AZ)
		return nil
	}
	w, err := d.ForWorker(ctx, o.worker)
	if err != nil {
		return err
	}
	old := w.VolumeID()
	if err := w.Restore(ctx, id, snapshot.RestoreOptions{}); err != nil {
		return err
	}
	if o.output == "json" {
		return o.printJSON(map[string]string{"snapshot": id, "worker": o.worker, "volume": w.VolumeID(), "old_volume": old})
	}
	fmt.Fprintf(o.Out, "restored %s onto worker %s: data volume %s (the old one, %s, is detached and kept: delete it once the restore is checked)\n", id, o.worker, w.VolumeID(), old)
	return nil
}
