package redistracker

import "github.com/redis/go-redis/v9"

// NewClient makes the go-redis client a redis URL names (the forms in
// the package doc), for another package of this module that keeps state
// in the tracker's Redis (package resumable's redislock).
func NewClient(rawURL, clientName string) (redis.UniversalClient, error) {
	return newClient(rawURL, clientName)
}
