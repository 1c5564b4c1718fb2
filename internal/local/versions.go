package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/s3event"
)

// handleEvent hands one notification to the orchestrator. An external
// store's event may lack the version ID of a versioned input bucket
// (versitygw's never carry one): it is looked up first, so that the job
// is keyed on the version as the reconciler's sweep keys it, and one
// upload never becomes two jobs.
func (p *Pipeline) handleEvent(ctx context.Context, body []byte) ([]orchestrator.Result, error) {
	if p.cfg.External == nil || !p.sources.versioned {
		return p.Orch.HandleEvent(ctx, body)
	}
	objs, bad, err := s3event.Parse(body)
	if errors.Is(err, s3event.ErrNotObjectCreated) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var results []orchestrator.Result
	for _, b := range bad {
		results = append(results, orchestrator.Result{Err: b})
	}
	var errs []error
	for _, oc := range objs {
		if oc.VersionID == "" && p.Orch.Match(oc.Bucket, oc.Key) {
			if err := p.findVersion(ctx, &oc); err != nil {
				results = append(results, orchestrator.Result{Object: oc, Err: err})
				errs = append(errs, err)
				continue
			}
		}
		r := p.Orch.Submit(ctx, oc)
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		results = append(results, r)
	}
	return results, errors.Join(errs...)
}

// findVersion sets the version ID of the object the event announced: the
// current version when its ETag is the event's (the usual case), else the
// newest version with that ETag (the key was overwritten since).
func (p *Pipeline) findVersion(ctx context.Context, oc *s3event.ObjectCreated) error {
	head, err := p.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &oc.Bucket, Key: &oc.Key})
	if err == nil && aws.ToString(head.VersionId) != "" && (oc.ETag == "" || s3event.TrimETag(aws.ToString(head.ETag)) == oc.ETag) {
		oc.VersionID, oc.ETag, oc.Size = aws.ToString(head.VersionId), s3event.TrimETag(aws.ToString(head.ETag)), aws.ToInt64(head.ContentLength)
		return nil
	}
	if oc.ETag == "" {
		return fmt.Errorf("find the version of s3://%s/%s (the event names none): %v", oc.Bucket, job.Printable(oc.Key), err)
	}
	// One page: versions of a key come newest first, and those of keys
	// that merely start with it follow; beyond a page the sweep decides.
	out, err := p.S3.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: &oc.Bucket, Prefix: &oc.Key, MaxKeys: aws.Int32(1000)})
	if err != nil {
		return fmt.Errorf("list the versions of s3://%s/%s (the event names none): %w", oc.Bucket, job.Printable(oc.Key), err)
	}
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == oc.Key && s3event.TrimETag(aws.ToString(v.ETag)) == oc.ETag {
			oc.VersionID, oc.Size = aws.ToString(v.VersionId), aws.ToInt64(v.Size)
			return nil
		}
	}
	return fmt.Errorf("s3://%s/%s has no version with ETag %s any more (the event names no version)", oc.Bucket, job.Printable(oc.Key), oc.ETag)
}
