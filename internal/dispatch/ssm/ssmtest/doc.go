// Package ssmtest is a fake AWS SSM and EC2 endpoint for tests: an
// httptest server that speaks the services' wire protocols (SSM's JSON
// 1.1, EC2's query protocol with XML answers), keeps a small model of the
// instances, records every request and can be scripted to fail.
//
// It is for tests only: the SSM driver's tests and the end-to-end tests
// of the Lambda import it. No non-test code may import it.
package ssmtest
