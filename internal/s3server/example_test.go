package s3server_test

import (
	"context"
	"log"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Start a server whose events go to a queue, upload a file, read its event.
// (Not run: one gateway per process, and the tests own it.)
func Example() {
	events := make(chan []byte, 1024)
	srv, err := s3server.Start(context.Background(), s3server.Config{
		DataDir:   "/var/lib/conveyor/s3",
		Addr:      "127.0.0.1:9000",
		AccessKey: "conveyor",
		SecretKey: "change-me",
		Buckets:   []string{"input", "output"},
		OnEvent: func(doc []byte) {
			select {
			case events <- doc: // never block the upload
			default: // the reconciler will find the object
			}
		},
	})
	if err != nil {
		log.Fatal(err) // one sentence that says what to do
	}
	defer srv.Stop()

	client := s3server.NewClient(srv.Endpoint(), "conveyor", "change-me", s3server.DefaultRegion)
	_, err = client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String("input"),
		Key:    aws.String("photos/cat.jpg"),
		Body:   strings.NewReader("..."),
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%s", <-events) // {"Records":[{"eventName":"ObjectCreated:Put",...}]}
}
