package s3server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The hook runs after versitygw has authenticated the request: a rejected
// request must not announce an object.
func TestUnauthenticatedRequestsAre403AndEmitNothing(t *testing.T) {
	t.Parallel()
	wrongSecret := NewClient(testServer.Endpoint(), testAccessKey, "not-the-secret", DefaultRegion)
	anonymous := s3.New(s3.Options{
		BaseEndpoint: aws.String(testServer.Endpoint()),
		Region:       DefaultRegion,
		UsePathStyle: true,
		Credentials:  aws.AnonymousCredentials{},
	})
	for _, tc := range []struct {
		name   string
		client *s3.Client
	}{
		{"wrong secret", wrongSecret},
		{"anonymous", anonymous},
		{"unknown access key", NewClient(testServer.Endpoint(), "AKIDNOTCONVEYOR00000", testSecretKey, DefaultRegion)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			key := "denied/" + strings.ReplaceAll(tc.name, " ", "-")
			_, err := tc.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader("nope")})
			want403(t, "PutObject", err)
			_, err = tc.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
			want403(t, "GetObject", err)
			_, err = tc.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket)})
			want403(t, "ListObjectsV2", err)
			_, err = tc.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(testBucket)})
			want403(t, "HeadBucket", err)

			if docs, _ := testEvents.forKey(t, testBucket, key); len(docs) != 0 {
				t.Errorf("rejected PutObject emitted %q", docs)
			}
			if _, err := client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)}); err == nil {
				t.Error("rejected PutObject stored the object")
			}
		})
	}
}

func want403(t *testing.T, op string, err error) {
	t.Helper()
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("%s: want HTTP 403, got %v", op, err)
	}
	if re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("%s: status %d, want 403 (%v)", op, re.HTTPStatusCode(), err)
	}
}
