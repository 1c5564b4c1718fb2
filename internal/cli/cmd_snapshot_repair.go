package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func newSnapshotDeleteCommand(o *snapshotOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID...",
		Short: "Remove snapshots; 'snapshot prune' then reclaims the data only they used",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return runSnapshotDelete(cmd.Context(), o, args) },
	}
}

func runSnapshotDelete(ctx context.Context, o *snapshotOptions, ids []string) error {
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	for _, id := range ids {
		s, err := r.Find(ctx, id)
		if err != nil {
			return err
		}
		if err := r.Delete(ctx, s.ID); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "deleted snapshot %s\n", s.ID)
	}
	fmt.Fprintln(o.Out, "run 'conveyor snapshot prune' to reclaim the data no other snapshot uses")
	return nil
}

func newSnapshotRepairCommand(o *snapshotOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "repair",
		Short: "Rebuild the index from the packs; name what is lost",
		Long: `Read every pack and rebuild the index from what they hold: a lost or damaged
index object is replaced, the readable blobs of a damaged pack are copied into
a new one and the damaged pack is removed. What no pack holds any more is
lost: repair names each snapshot and file that is now incomplete, so that you
can delete those snapshots ('conveyor snapshot delete ID'). It takes the
repository's exclusive lock: no snapshot is taken meanwhile. Exit code 0 when
nothing is lost, 1 when some snapshot lost data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSnapshotRepair(cmd.Context(), o) },
	}
}

func runSnapshotRepair(ctx context.Context, o *snapshotOptions) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	r, err := openSnapshots(ctx, o, false)
	if err != nil {
		return err
	}
	defer r.close()
	rep, err := r.Repair(ctx)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if err := o.printJSON(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(o.Out, rep.String())
	}
	if rep.Lost() {
		return fmt.Errorf("repaired, but %d blob(s) are lost: the snapshots named above are incomplete", rep.LostBlobs)
	}
	return nil
}
