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
	"strings"
	"sync"
	"time"

	"github.com/livefuse/livefuse/encryption"
	"github.com/livefuse/livefuse/ingest"
	"github.com/livefuse/livefuse/lms"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/web"
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
		return nil, fmt.Errorf("%w: %v", encryption.ErrKeyNotFound, err)
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

// cryptLayer runs the encrypted outputs of the origin's streams, follows
// the registry's encryption flag, and serves the encrypted outputs, the
// key delivery handler (/keys/) and the reference player (/player/) on the
// media listener.
type cryptLayer struct {
	cfg  EncryptionConfig
	hub  *origin.Hub
	reg  *lms.Registry
	auth *authorizer
	keys *sealedKeys
	kh   *encryption.Handler
	web  http.Handler
	log  *slog.Logger

	// alias names the stream players of app/name really get (the
	// watermarked NAME_source); set by the wiring, nil for none.
	alias func(app, name string) (string, bool)

	mu       sync.Mutex
	live     map[string]*origin.Encrypted
	starting map[string]chan struct{} // closed when the start of a stream's outputs is over
}

func newCryptLayer(cfg EncryptionConfig, dataDir string, hub *origin.Hub, reg *lms.Registry, store *lms.Store, auth *authorizer, log *slog.Logger) (*cryptLayer, error) {
	master, err := loadMasterKey(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	sealer, err := encryption.NewSealer(master)
	clear(master)
	if err != nil {
		return nil, err
	}
	l := &cryptLayer{
		cfg:      cfg,
		hub:      hub,
		reg:      reg,
		auth:     auth,
		keys:     &sealedKeys{blobs: lms.NewKeyBlobs(store), sealer: sealer},
		web:      web.Handler(os.Getenv(webModulesEnv)),
		log:      log,
		live:     map[string]*origin.Encrypted{},
		starting: map[string]chan struct{}{},
	}
	hub.OnLive(func(app, name string) { l.attach(app, name, false) })
	l.kh, err = encryption.NewHandler(encryption.HandlerConfig{
		Store:     l.keys,
		Authorize: l.authorizeKey,
		Rate:      cfg.KeyRate,
		Burst:     cfg.KeyBurst,
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// authorizeKey lets a player fetch a key of app/name with a play token
// valid for the key path itself or for one of the stream's play URLs, so
// the token of the playlist or of the .flv URL also opens its keys.
func (l *cryptLayer) authorizeKey(app, name, uri string, q url.Values) error {
	s, ok := l.flagOf(app, name)
	if !ok {
		return fmt.Errorf("%s/%s is not registered", app, name)
	}
	if s.PlayKey == "" {
		if l.cfg.OpenKeyAccess {
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
		if err = l.auth.typeA.Verify(u, tok, s.PlayKey, time.Now()); err == nil {
			return nil
		}
	}
	return err
}

// newKey makes a content key for stream and stores it sealed.
func (l *cryptLayer) newKey(stream string) func(ctx context.Context) (*encryption.Key, error) {
	return func(ctx context.Context) (*encryption.Key, error) {
		k, err := encryption.NewKey()
		if err != nil {
			return nil, err
		}
		if err := l.keys.Put(ctx, stream, k); err != nil {
			return nil, fmt.Errorf("store content key of %s: %w", stream, err)
		}
		return k, nil
	}
}

// run attaches the encrypted outputs to streams already live, then to
// each stream as it goes live (the hub's OnLive hook, registered by
// newCryptLayer); the outputs start from the cached GOP, so nothing is
// missed.
func (l *cryptLayer) run(ctx context.Context) {
	for _, st := range l.hub.List() {
		l.attach(st.App, st.Name, false)
	}
	<-ctx.Done()
}

// attach starts the encrypted outputs of a live stream that should have
// them (or when force). It is a no-op for attached or non-live streams.
func (l *cryptLayer) attach(app, name string, force bool) *origin.Encrypted {
	key := app + "/" + name
	s, registered := l.flagOf(app, name)
	l.mu.Lock()
	if e := l.live[key]; e != nil {
		select {
		case <-e.Done():
			delete(l.live, key) // the session ended; a new one may be live
		default:
			l.mu.Unlock()
			return e
		}
	}
	if ch := l.starting[key]; ch != nil {
		// Another request is starting them (it may wait on etcd for the
		// key): wait for it rather than hold the lock for every stream.
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.live[key]
	}
	if !force && l.cfg.Outputs != "all" && !(registered && s.Encryption) {
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.starting[key] = ch
	l.mu.Unlock()
	e, err := l.hub.StartEncrypted(app, name, origin.EncryptedConfig{
		Enabled:        registered && s.Encryption,
		NewKey:         l.newKey(key),
		RotateSegments: l.cfg.RotateSegments,
		// Found flagged when it went live (not turned on just now).
		FromStart: !force,
	})
	l.mu.Lock()
	delete(l.starting, key)
	close(ch)
	if err == nil {
		l.live[key] = e
	}
	l.mu.Unlock()
	if err != nil {
		if !errors.Is(err, origin.ErrNotFound) {
			l.log.Error("encrypted outputs not started", "stream", key, "err", err)
		}
		return nil
	}
	l.log.Info("encrypted outputs started", "stream", key, "encrypted", registered && s.Encryption)
	return e
}

// flagOf returns the registry entry whose encryption flag and play key
// apply to app/name: its own, or for a rendition (NAME_<rendition>,
// the watermarked NAME_source included) its stream's, so that turning
// encryption on for a stream covers every picture of it.
func (l *cryptLayer) flagOf(app, name string) (lms.Stream, bool) {
	if s, ok := l.reg.Get(app, name); ok {
		return s, true
	}
	return renditionParent(l.reg, app, name)
}

// target is the stream whose encrypted outputs players of app/name get.
func (l *cryptLayer) target(app, name string) string {
	if l.alias != nil {
		if a, ok := l.alias(app, name); ok {
			return a
		}
	}
	return name
}

// streamChanged applies a change of the registry's encryption flag, to
// the stream and to its live renditions.
func (l *cryptLayer) streamChanged(old, cur *lms.Stream) {
	if cur == nil || (old != nil && old.Encryption == cur.Encryption) {
		return
	}
	names := []string{cur.Name}
	for _, st := range l.hub.List() {
		if st.App == cur.App && strings.HasPrefix(st.Name, cur.Name+"_") {
			if p, ok := renditionParent(l.reg, st.App, st.Name); ok && p.Name == cur.Name {
				names = append(names, st.Name)
			}
		}
	}
	for _, name := range names {
		e := l.attach(cur.App, name, cur.Encryption)
		if e == nil || e.Enabled() == cur.Encryption {
			continue
		}
		if err := e.SetEnabled(cur.Encryption); err != nil {
			l.log.Error("encryption change failed", "stream", cur.App+"/"+name, "err", err)
		}
	}
}

// play gives RTMP players of a stream with encrypted outputs the
// encrypted stream (onEncryption tags included, as over HTTP-FLV); other
// streams come from next.
func (l *cryptLayer) play(next ingest.PlaySource) ingest.PlaySource {
	return playFunc(func(app, name string) (ingest.PacketReader, error) {
		if e := l.attach(app, l.target(app, name), false); e != nil {
			select {
			case <-e.Done():
			default:
				return e.Subscribe(), nil
			}
		}
		return next.Subscribe(app, name)
	})
}

// playFunc is an ingest.PlaySource made of a func.
type playFunc func(app, name string) (ingest.PacketReader, error)

func (f playFunc) Subscribe(app, name string) (ingest.PacketReader, error) { return f(app, name) }

// media serves /keys/ and /player/, and the HTTP-FLV of streams with
// encrypted outputs (and their HLS when the origin's HLS variant is not
// MPEG-TS; otherwise the origin's own HLS output is the encrypted one);
// everything else goes to next.
func (l *cryptLayer) media(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case strings.HasPrefix(p, "/keys/"):
			if app, name, ok := keyStream(p); ok && l.auth.refuseAddress(w, r, app, name) {
				return
			}
			l.kh.ServeHTTP(w, r)
			return
		case p == "/player" || strings.HasPrefix(p, "/player/"):
			http.StripPrefix("/player", l.web).ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if app, name, uri, ok := playRoute(p); ok {
				// attach also closes the race with run's polling for a
				// stream that just went live.
				if e := l.attach(app, l.target(app, name), false); e != nil && (strings.HasSuffix(p, ".flv") || e.ServesHLS()) {
					select {
					case <-e.Done():
					default:
						if l.auth.refuseAddress(w, r, app, name) {
							return
						}
						if err := l.auth.AuthorizePlay(app, name, uri, r.URL.Query()); err != nil {
							http.Error(w, "forbidden", http.StatusForbidden)
							return
						}
						e.ServeHTTP(w, r)
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// playRoute parses /{app}/{name}.flv and /{app}/{name}/{index.m3u8 |
// seg<N>.ts}; uri is the path a play token signs (the playlist's for
// every HLS file).
func playRoute(p string) (app, name, uri string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return "", "", "", false
	}
	app, rest, ok = strings.Cut(rest, "/")
	if !ok || app == "" {
		return "", "", "", false
	}
	if n, ok := strings.CutSuffix(rest, ".flv"); ok && n != "" && !strings.Contains(n, "/") {
		return app, n, p, true
	}
	name, file, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.Contains(file, "/") {
		return "", "", "", false
	}
	if file != "index.m3u8" && !(strings.HasPrefix(file, "seg") && strings.HasSuffix(file, ".ts")) {
		return "", "", "", false
	}
	return app, name, "/" + app + "/" + name + "/index.m3u8", true
}
