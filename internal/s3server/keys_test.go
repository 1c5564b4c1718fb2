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

// Keys that the posix backend stores under another name, or refuses: the
// event must name the object as a later HEAD or ListObjects does.
func TestEventKeyIsTheStoredKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := client()
	for _, tc := range []struct {
		put, stored string // stored "" means rejected with 400
	}{
		{"keys/%2e%2e/pct", "keys/%2e%2e/pct"},
		{"keys/100%25 done%", "keys/100%25 done%"},
		{"keys/a/../b", "keys/b"},
		{"keys/./dot", "keys/dot"},
		{"keys/x//y", "keys/x/y"},
		{"../escape", ""},
		{"keys/../../escape", ""},
	} {
		t.Run(tc.put, func(t *testing.T) {
			_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(tc.put), Body: strings.NewReader("k")})
			if tc.stored == "" {
				var re *smithyhttp.ResponseError
				if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
					t.Fatalf("PutObject %q: want 400, got %v", tc.put, err)
				}
				for _, k := range []string{tc.put, strings.TrimLeft(tc.put, "./")} {
					if docs, _ := testEvents.forKey(t, testBucket, k); len(docs) != 0 {
						t.Errorf("rejected key emitted %q", docs)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, evs := testEvents.forKey(t, testBucket, tc.stored); len(evs) != 1 {
				t.Fatalf("want 1 event with key %q, got %+v", tc.stored, evs)
			}
			list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(tc.stored)})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Contents) == 0 || aws.ToString(list.Contents[0].Key) != tc.stored {
				t.Errorf("ListObjectsV2 does not name the object %q", tc.stored)
			}
		})
	}
}
