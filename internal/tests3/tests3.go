// Package tests3 runs a real S3-compatible server for tests: Versity's
// S3 gateway (versitygw, github.com/versity/versitygw/cmd/versitygw
// v1.8.0) on a POSIX folder of the test's own, on a free loopback port,
// killed when the test ends. Its buckets are the folder's subfolders.
//
// The binary is $VERSITYGW, else versitygw on PATH, else in GOPATH/bin. Without it the test
// is skipped, unless the CI environment variable is set: then it fails,
// so CI never passes by skipping (.ci/run installs it).
package tests3

import (
	"context"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/caddy-upload-progress/caddy-upload-progress/internal/testkit"
)

// BinaryEnv names the variable that holds the path of versitygw.
const BinaryEnv = "VERSITYGW"

// The credentials of the gateway's one account, and the region the
// clients use.
const (
	AccessKey = "test-access-key"
	SecretKey = "test-secret-key-of-versitygw"
	Region    = "us-east-1"
)

// startTimeout is how long the gateway may take to accept connections.
const startTimeout = 15 * time.Second

// Binary is the versitygw the tests run, "" if there is none.
func Binary() string {
	if path := os.Getenv(BinaryEnv); path != "" {
		return path
	}
	if path, err := exec.LookPath("versitygw"); err == nil {
		return path
	}
	// where the README's `go install` puts it, on PATH or not
	path := filepath.Join(build.Default.GOPATH, "bin", "versitygw")
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

// Server is one versitygw process. Kill and Start stop and restart it
// on the same port and folder, for tests of S3 going away.
type Server struct {
	t    testing.TB
	bin  string
	Port int
	Root string // the folder whose subfolders are the buckets

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start runs versitygw with the buckets named (made empty), and kills
// it in the test's Cleanup.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("versitygw is needed: set %s to its path or put it on PATH "+
				"(go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)", BinaryEnv)
		}
		t.Skipf("versitygw not found: set %s to its path or put it on PATH", BinaryEnv)
	}
	s := &Server{t: t, bin: bin, Port: testkit.FreePort(t), Root: t.TempDir()}
	for _, b := range buckets {
		s.Bucket(b)
	}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Bucket makes an empty bucket.
func (s *Server) Bucket(name string) {
	s.t.Helper()
	if err := os.Mkdir(filepath.Join(s.Root, name), 0o755); err != nil {
		s.t.Fatalf("making bucket %s: %v", name, err)
	}
}

// Addr is host:port of the gateway.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Endpoint is the gateway's base URL.
func (s *Server) Endpoint() string { return "http://" + s.Addr() }

// Env is the AWS environment of a client of the gateway.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(s.Root, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(s.Root, "no-aws-credentials"),
	}
}

// SetEnv sets Env in this process for the test (tests that use it must
// not run in parallel).
func (s *Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				t.Setenv(kv[:i], kv[i+1:])
				break
			}
		}
	}
}

// Start (re)starts the gateway on its port and folder, and waits until
// it answers.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("tests3: gateway already running")
	}
	cmd := exec.Command(s.bin, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", s.Addr(), "--quiet", "posix", s.Root)
	cmd.Dir = s.Root
	log, err := os.Create(filepath.Join(s.t.TempDir(), "versitygw.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting versitygw: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(startTimeout)
	for {
		if resp, err := http.Get(s.Endpoint() + "/"); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw on port %d did not answer within %v (log in %s)", s.Port, startTimeout, log.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the gateway with SIGKILL and waits for it to exit. Killing
// a stopped gateway does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Client is an S3 client of the gateway, for the checks a test makes
// beside the code under test.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// Keys lists the keys of the objects in bucket, through the S3 API.
func (s *Server) Keys(bucket string) []string {
	s.t.Helper()
	out, err := s.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		s.t.Fatalf("listing bucket %s: %v", bucket, err)
	}
	var keys []string
	for _, obj := range out.Contents {
		keys = append(keys, aws.ToString(obj.Key))
	}
	return keys
}

// MultipartUploads lists the keys of the multipart uploads in progress
// in bucket, with the number of parts each has.
func (s *Server) MultipartUploads(bucket string) map[string]int {
	s.t.Helper()
	ctx := context.Background()
	c := s.Client()
	out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		s.t.Fatalf("listing the multipart uploads of %s: %v", bucket, err)
	}
	uploads := map[string]int{}
	for _, up := range out.Uploads {
		parts, err := c.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(bucket), Key: up.Key, UploadId: up.UploadId})
		if err != nil {
			s.t.Fatalf("listing the parts of %s: %v", aws.ToString(up.Key), err)
		}
		uploads[aws.ToString(up.Key)] = len(parts.Parts)
	}
	return uploads
}

// String names the gateway, for messages.
func (s *Server) String() string { return fmt.Sprintf("versitygw at %s", s.Endpoint()) }
