// Package s3store keeps resumable uploads in a bucket of an
// S3-compatible service: the resumable.Storage of the s3 setting. It
// wraps tusd's S3 store (AWS SDK v2), which writes each upload as a
// multipart upload (its parts of at least 5MiB; the bytes of a PATCH
// that do not make a part yet wait in a <id>.part object) with its info
// in <id>.info, and keeps this package's record of the upload beside
// them, in <id>.delivery. Every instance that uses the bucket sees the
// same uploads.
//
// tusd names an upload in S3 "<id>+<multipart upload ID>"; the tus
// clients here only ever see <id> (resumable's IDs), and the multipart
// upload ID is read from the info object when an upload is first used
// in this process.
package s3store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/tus/tusd/v2/pkg/handler"
	tuss3 "github.com/tus/tusd/v2/pkg/s3store"
	"go.uber.org/zap"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

// Timeouts of the calls this package makes on its own (tusd's run in
// their request's context).
const (
	// checkTimeout bounds the check of the bucket when it is opened.
	checkTimeout = 15 * time.Second
	// opTimeout bounds each call on records, listing and removal.
	opTimeout = 30 * time.Second
)

// recordSuffix names an upload's record object beside tusd's .info.
const recordSuffix = ".delivery"

// maxCachedIDs bounds the multipart upload IDs kept in memory; past it,
// the cache starts again empty (each ID is read again from its info
// object when next used).
const maxCachedIDs = 10000

// Storage is a bucket (and key prefix) holding resumable uploads.
type Storage struct {
	cfg    resumable.S3Config
	bucket string
	prefix string // empty, or ending in /
	client *s3.Client
	tus    tuss3.S3Store

	mu        sync.Mutex
	multipart map[string]string // upload ID -> its multipart upload ID
}

// Open opens the bucket of cfg, after checking that it answers with the
// credentials of the environment; its errors say what is wrong, for the
// config's error.
func Open(cfg resumable.S3Config, logger *zap.Logger) (resumable.Storage, error) {
	bucket, prefix, err := cfg.Bucket()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading the AWS configuration of the environment: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	// the SDK's own warnings (a retry, a fallback) go to the handler's log
	sdkLogger := logger.Named("s3")
	awsCfg.Logger = logging.LoggerFunc(func(_ logging.Classification, format string, v ...any) {
		sdkLogger.Warn(fmt.Sprintf(format, v...))
	})
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return nil, fmt.Errorf("bucket %q%s does not answer: %s", bucket, endpointPhrase(cfg), describe(err))
	}
	store := tuss3.New(bucket, client)
	store.ObjectPrefix = prefix
	logger.Debug("S3 store opened", zap.String("bucket", bucket), zap.String("prefix", prefix), zap.String("endpoint", cfg.Endpoint))
	return &Storage{
		cfg:       cfg,
		bucket:    bucket,
		prefix:    prefix,
		client:    client,
		tus:       store,
		multipart: make(map[string]string),
	}, nil
}

// endpointPhrase names the endpoint in an error, if one is set.
func endpointPhrase(cfg resumable.S3Config) string {
	if cfg.Endpoint == "" {
		return ""
	}
	return " at " + cfg.Endpoint
}

// describe is an S3 error as an operator reads it: the service's code
// and message, or what kept the request from it.
func describe(err error) string {
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		msg := apiErr.ErrorCode()
		if m := apiErr.ErrorMessage(); m != "" {
			msg += ": " + m
		}
		switch msg {
		case "NotFound", "NoSuchBucket":
			return msg + " (create the bucket first)"
		case "Forbidden", "AccessDenied":
			return msg + " (check the credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
		}
		return msg
	}
	if strings.Contains(err.Error(), "get credentials") {
		return err.Error() + " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
	}
	return err.Error()
}

func (s *Storage) Key() string { return s.cfg.Key() }

// UseIn sets the uploads' data store: tusd's S3 store, behind the IDs
// the clients see.
func (s *Storage) UseIn(composer *handler.StoreComposer) {
	ds := dataStore{s}
	composer.UseCore(ds)
	composer.UseTerminater(ds)
	composer.UseLengthDeferrer(ds)
}

func (s *Storage) object(name string) *string { return aws.String(s.prefix + name) }

func (s *Storage) ReadRecord(ctx context.Context, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.object(id + recordSuffix)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("record of %s: %w", id, fs.ErrNotExist)
		}
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(io.LimitReader(out.Body, 1<<20))
}

// WriteRecord puts the record object: S3 replaces an object whole.
func (s *Storage) WriteRecord(ctx context.Context, id string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           s.object(id + recordSuffix),
		Body:          strings.NewReader(string(data)),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/json"),
	})
	return err
}

func (s *Storage) RecordIDs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var ids []string
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing bucket %s: %w", s.bucket, err)
		}
		for _, obj := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(obj.Key), s.prefix)
			if id, ok := strings.CutSuffix(name, recordSuffix); ok && validID(id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// Open reads the object tusd completed from the upload's parts.
func (s *Storage) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.object(id)})
	if err != nil {
		return nil, err
	}
	return out.Body, nil
}

// LastWrite is the latest time among the upload's parts and its
// pending .part object while its multipart upload is in progress, or
// the time of its completed object: two requests to the bucket.
func (s *Storage) LastWrite(ctx context.Context, id string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var last time.Time
	later := func(t *time.Time) {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	head := func(name string) error {
		out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: s.object(name)})
		if err == nil {
			later(out.LastModified)
		} else if !isNotFound(err) {
			return err
		}
		return nil
	}
	mpid, err := s.multipartID(ctx, id)
	if errors.Is(err, handler.ErrNotFound) {
		return last, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	pages := s3.NewListPartsPaginator(s.client, &s3.ListPartsInput{Bucket: &s.bucket, Key: s.object(id), UploadId: &mpid})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if isNotFound(err) { // completed (or aborted)
			return last, head(id)
		}
		if err != nil {
			return time.Time{}, err
		}
		for _, part := range page.Parts {
			later(part.LastModified)
		}
	}
	return last, head(id + ".part")
}

// RemoveData aborts the upload's multipart upload (if it is not
// complete) and deletes its objects but the record.
func (s *Storage) RemoveData(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var errs []error
	if mpid, err := s.multipartID(ctx, id); err == nil {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: s.object(id), UploadId: &mpid})
		if err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	} else if !errors.Is(err, handler.ErrNotFound) {
		errs = append(errs, err)
	}
	errs = append(errs, s.delete(ctx, id, id+".part", id+".info"))
	s.forget(id)
	return errors.Join(errs...)
}

// Remove is RemoveData, and the record goes too.
func (s *Storage) Remove(ctx context.Context, id string) error {
	if err := s.RemoveData(ctx, id); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return s.delete(ctx, id+recordSuffix)
}

// delete deletes the objects named; missing ones are fine.
func (s *Storage) delete(ctx context.Context, names ...string) error {
	objects := make([]types.ObjectIdentifier, len(names))
	for i, name := range names {
		objects[i] = types.ObjectIdentifier{Key: s.object(name)}
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: &s.bucket,
		Delete: &types.Delete{Objects: objects, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range out.Errors {
		if aws.ToString(e.Code) != "NoSuchKey" {
			errs = append(errs, fmt.Errorf("deleting %s: %s %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		}
	}
	return errors.Join(errs...)
}

func (s *Storage) Close() error { return nil }

// multipartID returns the multipart upload ID of upload id, from the
// cache or its info object; handler.ErrNotFound if it has none.
func (s *Storage) multipartID(ctx context.Context, id string) (string, error) {
	s.mu.Lock()
	mpid, ok := s.multipart[id]
	s.mu.Unlock()
	if ok {
		return mpid, nil
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.object(id + ".info")})
	if err != nil {
		if isNotFound(err) {
			return "", handler.ErrNotFound
		}
		return "", err
	}
	defer out.Body.Close()
	var info struct{ ID string }
	if err := json.NewDecoder(io.LimitReader(out.Body, 1<<20)).Decode(&info); err != nil {
		return "", fmt.Errorf("reading the info of upload %s: %w", id, err)
	}
	objectID, mpid, found := cutID(info.ID)
	if !found || objectID != id {
		return "", fmt.Errorf("the info of upload %s names %q, not <id>+<multipart upload ID>", id, info.ID)
	}
	s.remember(id, mpid)
	return mpid, nil
}

func (s *Storage) remember(id, mpid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.multipart) >= maxCachedIDs {
		clear(s.multipart)
	}
	s.multipart[id] = mpid
}

func (s *Storage) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.multipart, id)
}

// isNotFound reports whether err says the object or multipart upload
// does not exist.
func isNotFound(err error) bool {
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return true
		}
	}
	return false
}

// validID reports whether id is made of the characters of resumable's
// upload IDs (A-Z a-z 0-9 _ -).
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Interface guard
var _ resumable.Storage = (*Storage)(nil)
