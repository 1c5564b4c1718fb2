package fleet

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// IMDS is Metadata read with the SDK's IMDSv2 client.
type IMDS struct{ c *imds.Client }

// NewIMDS returns Metadata from the instance metadata service; endpoint
// "" is the instance's own (169.254.169.254), else a test server's URL.
func NewIMDS(endpoint string) *IMDS {
	return &IMDS{c: imds.New(imds.Options{Endpoint: endpoint})}
}

// Get reads one metadata path; a 404 is not an error, found is false.
func (m *IMDS) Get(ctx context.Context, path string) (string, bool, error) {
	out, err := m.c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", false, err
	}
	return strings.TrimSpace(string(b)), true, nil
}
