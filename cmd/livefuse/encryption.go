package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/livefuse/livefuse/encryption"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/origin"
)

// EncryptionConfig is the `encryption` section of livefuse.yaml.
type EncryptionConfig struct {
	// MasterKey seals content keys at rest in etcd: 32 or 64 hex digits,
	// or base64 of 16 or 32 bytes. Empty means the environment variable
	// LIVEFUSE_MASTER_KEY, else data_dir/master.key, made at the first
	// start. Every node of a cluster needs the same master key.
	MasterKey string `yaml:"master_key"`
	// RotateSegments rotates the HLS key every so many segments; 0 keeps
	// one key per stream session.
	RotateSegments int `yaml:"rotate_segments"`
	// Outputs picks which streams play through the encrypted outputs:
	// "all" (default) every stream, so that turning encryption on reaches
	// every player, also those that joined while it was off (until it is
	// first turned on the output is the clear stream, byte for byte);
	// "flagged" only those with encryption on when they go live or turned
	// on while live (saves one internal reader per clear stream, but a
	// player that joined before stays clear until it reconnects).
	Outputs string `yaml:"outputs"`
	// KeyRate and KeyBurst limit key requests per client IP.
	KeyRate  float64 `yaml:"key_rate"`
	KeyBurst int     `yaml:"key_burst"`
	// OpenKeyAccess lets a stream have encryption on without a play_key,
	// its content keys then going to anyone who asks /keys/ (default
	// false: such a stream is refused, in the config file and through the
	// API, and keys of a stream without a play_key are not delivered).
	// True is logged as a warning at start.
	OpenKeyAccess bool `yaml:"open_key_access"`
}

func defaultEncryptionConfig() EncryptionConfig {
	return EncryptionConfig{Outputs: "all", KeyRate: 5, KeyBurst: 20}
}

// checkHLSVariant refuses streams of the config file with encryption on
// when the origin's HLS variant has no encrypted form (only mpegts does,
// with SAMPLE-AES): their HLS would otherwise have to be refused or
// served clear. The same reason is given to the registry for API writes.
func (c EncryptionConfig) checkHLSVariant(variant string, streams []StreamConfig) error {
	reason := encryptionRefusal(variant)
	if reason == "" {
		return nil
	}
	for i, s := range streams {
		if s.Encryption {
			return fmt.Errorf("config: streams[%d] (%s): %s", i, s.Name, reason)
		}
	}
	return nil
}

// encryptionRefusal is why a stream cannot be encrypted on a node whose
// HLS variant is variant ("" when it can).
func encryptionRefusal(variant string) string {
	switch variant {
	case "", origin.HLSMPEGTS, origin.HLSOff:
		return ""
	}
	return "encryption needs origin.hls_variant mpegts (SAMPLE-AES): this node's HLS variant " + variant +
		" has no encrypted form; leave encryption off, or use hls_variant mpegts (or off, HTTP-FLV only)"
}

func (c EncryptionConfig) validate() error {
	switch c.Outputs {
	case "", "flagged", "all":
	default:
		return fmt.Errorf("config: encryption.outputs %q: want flagged or all", c.Outputs)
	}
	if c.RotateSegments < 0 {
		return errors.New("config: encryption.rotate_segments must not be negative")
	}
	return nil
}

// checkKeyAccess refuses streams of the config file with encryption on
// and no play_key, unless open key access is allowed (the registry applies
// the same rule to API writes).
func (c EncryptionConfig) checkKeyAccess(streams []StreamConfig) error {
	if c.OpenKeyAccess {
		return nil
	}
	for i, s := range streams {
		if s.Encryption && s.PlayKey == "" {
			return fmt.Errorf("config: streams[%d] (%s): encryption needs a play_key: without one, players fetch "+
				"content keys unsigned and so can anyone; set play_key, or allow open key access with "+
				"encryption.open_key_access: true", i, s.Name)
		}
	}
	return nil
}

// warnKeyAccess logs the open key access choice, and the streams stored
// with encryption on and no play_key (before the rule), whose keys are not
// delivered until they get one.
func warnKeyAccess(cfg EncryptionConfig, streams []lms.Stream, log *slog.Logger) {
	if cfg.OpenKeyAccess {
		log.Warn("encryption.open_key_access is on: content keys of encrypted streams without a play_key go to anyone who asks")
		return
	}
	for _, s := range streams {
		if s.Encryption && s.PlayKey == "" {
			log.Warn("encrypted stream has no play_key: its content keys are refused until it gets one (or encryption.open_key_access is on)",
				"stream", s.Path(), "reason", "no play_key")
		}
	}
}

// Environment variables: the master key, and an npm node_modules
// directory with hls.js and mpegts.js for the player (development: else
// the copies embedded by make web-assets are served).
const (
	masterKeyEnv  = "LIVEFUSE_MASTER_KEY"
	webModulesEnv = "LIVEFUSE_WEB_MODULES"
)

// loadMasterKey finds the master key: config, environment, or the key
// file in dataDir (made when absent). The key is never logged.
func loadMasterKey(cfg EncryptionConfig, dataDir string, log *slog.Logger) ([]byte, error) {
	if cfg.MasterKey != "" {
		return encryption.ParseMasterKey(cfg.MasterKey)
	}
	if v := os.Getenv(masterKeyEnv); v != "" {
		k, err := encryption.ParseMasterKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", masterKeyEnv, err)
		}
		return k, nil
	}
	path := filepath.Join(dataDir, "master.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := encryption.ParseMasterKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("master key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(k) + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	log.Info("master key generated; back it up, sealed content keys need it", "path", path)
	return k, nil
}

// sealedKeys adapts lms.KeyBlobs (opaque blobs in etcd) to
// encryption.KeyStore: keys are sealed with the master key before they
// leave the process. Opened keys are cached.
type sealedKeys struct {
	blobs  *lms.KeyBlobs
	sealer *encryption.Sealer

	mu    sync.Mutex
	cache map[string]*encryption.Key
}

const keyCacheSize = 4096

func (s *sealedKeys) Get(ctx context.Context, stream, id string) (*encryption.Key, error) {
	ck := stream + "\x00" + id
	s.mu.Lock()
	k := s.cache[ck]
	s.mu.Unlock()
	if k != nil {
		return k, nil
	}
	b, err := s.blobs.Get(ctx, stream, id)
	if errors.Is(err, lms.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %w", encryption.ErrKeyNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	k, err = s.sealer.Open(stream, b)
	if err != nil {
		return nil, err
	}
	s.remember(ck, k)
	return k, nil
}

func (s *sealedKeys) Put(ctx context.Context, stream string, k *encryption.Key) error {
	b, err := s.sealer.Seal(stream, k)
	if err != nil {
		return err
	}
	if err := s.blobs.Put(ctx, stream, k.ID, b); err != nil {
		return err
	}
	s.remember(stream+"\x00"+k.ID, k)
	return nil
}

func (s *sealedKeys) remember(ck string, k *encryption.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache == nil || len(s.cache) >= keyCacheSize {
		s.cache = make(map[string]*encryption.Key)
	}
	s.cache[ck] = k
}

// keyService is the node's part of encryption: content keys made and
// stored sealed for origin's encrypted outputs, and their delivery
// (/keys/) to authorized players.
type keyService struct {
	cfg     EncryptionConfig
	reg     *lms.Registry
	auth    *authorizer
	keys    *sealedKeys
	handler *encryption.Handler
}

func newKeyService(cfg EncryptionConfig, dataDir string, reg *lms.Registry, store *lms.Store, auth *authorizer, log *slog.Logger) (*keyService, error) {
	master, err := loadMasterKey(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	sealer, err := encryption.NewSealer(master)
	clear(master)
	if err != nil {
		return nil, err
	}
	k := &keyService{cfg: cfg, reg: reg, auth: auth, keys: &sealedKeys{blobs: lms.NewKeyBlobs(store), sealer: sealer}}
	k.handler, err = encryption.NewHandler(encryption.HandlerConfig{
		Store:     k.keys,
		Authorize: k.authorize,
		Rate:      cfg.KeyRate,
		Burst:     cfg.KeyBurst,
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// originConfig is what origin needs to run encrypted outputs.
func (k *keyService) originConfig() origin.EncryptionConfig {
	return origin.EncryptionConfig{NewKey: k.newKey, RotateSegments: k.cfg.RotateSegments, AllStreams: k.cfg.Outputs != "flagged"}
}

// newKey makes a content key for stream and stores it sealed.
func (k *keyService) newKey(ctx context.Context, stream string) (*encryption.Key, error) {
	key, err := encryption.NewKey()
	if err != nil {
		return nil, err
	}
	if err := k.keys.Put(ctx, stream, key); err != nil {
		return nil, fmt.Errorf("store content key of %s: %w", stream, err)
	}
	return key, nil
}

// ServeHTTP serves /keys/{app}/{name}/{id}, after the IP lists.
func (k *keyService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if app, name, ok := keyStream(r.URL.Path); ok && k.auth.refuseAddress(w, r, app, name) {
		return
	}
	k.handler.ServeHTTP(w, r)
}

// authorize lets a player fetch a key of app/name with a play token
// valid for the key path itself or for one of the stream's play URLs, so
// the token of the playlist or of the .flv URL also opens its keys.
func (k *keyService) authorize(app, name, uri string, q url.Values) error {
	s, ok := k.reg.Get(app, name)
	if !ok {
		// A rendition (NAME_<rendition>, the watermarked NAME_source
		// included) is encrypted under its stream's flag and play key.
		s, ok = renditionParent(k.reg, app, name)
	}
	if !ok {
		return fmt.Errorf("%s/%s is not registered", app, name)
	}
	if s.PlayKey == "" {
		if k.cfg.OpenKeyAccess {
			return nil
		}
		return fmt.Errorf("%s/%s has no play_key and encryption.open_key_access is off", app, s.Name)
	}
	tok := q.Get("auth_key")
	var err error
	urls := []string{uri, "/" + app + "/" + name + "/index.m3u8", "/" + app + "/" + name + ".flv"}
	if s.Name != name {
		// A rendition (ABR variant) or the watermarked source: the token
		// its players hold is the stream's own.
		urls = append(urls, "/"+app+"/"+s.Name+"/index.m3u8", "/"+app+"/"+s.Name+".flv")
	}
	for _, u := range urls {
		if err = k.auth.typeA.Verify(u, tok, s.PlayKey, time.Now()); err == nil {
			return nil
		}
	}
	return err
}
