package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/volume"
)

// LogPrefix is where shipped job logs go in the state bucket.
const LogPrefix = "logs/"

// shippedMark is the file whose modification time is the last shipping.
const shippedMark = ".shipped"

// ShipLogs returns a LogShipper that uploads each job log of vol written
// since the last shipping to s3://<bucket>/logs/<job>.log: a worker
// leaving the fleet takes nothing with it that a person would look for.
func ShipLogs(client *s3.Client, bucket string, vol *volume.Volume) LogShipper {
	return func(ctx context.Context) (int, error) {
		dir := filepath.Join(vol.Root(), "logs")
		mark := filepath.Join(dir, shippedMark)
		var since time.Time
		if fi, err := os.Stat(mark); err == nil {
			since = fi.ModTime()
		}
		start := time.Now()
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, fmt.Errorf("list job logs: %w", err)
		}
		n := 0
		var errs []error
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".log")
			if !ok || !job.ValidID(id) {
				continue
			}
			fi, err := e.Info()
			if err != nil || !fi.ModTime().After(since) {
				continue
			}
			if err := upload(ctx, client, bucket, LogPrefix+id+".log", filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			n++
		}
		if len(errs) == 0 {
			if err := os.WriteFile(mark, nil, 0o640); err == nil {
				_ = os.Chtimes(mark, start, start)
			}
		}
		return n, errors.Join(errs...)
	}
}

func upload(ctx context.Context, client *s3.Client, bucket, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	_, err = client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: f, ContentLength: aws.Int64(fi.Size()),
		ContentType: aws.String("text/plain; charset=utf-8"),
	})
	if err != nil {
		return fmt.Errorf("ship %s to s3://%s/%s: %w", filepath.Base(path), bucket, key, err)
	}
	return nil
}
