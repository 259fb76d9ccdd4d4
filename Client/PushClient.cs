using System.Collections.Concurrent;
using System.Buffers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;

namespace OrleansPush.Client;

/// <summary>
/// A client of the raw WebSocket protocol (<c>GET /ws</c>, subprotocol <c>orleanspush.v1.json</c>).
/// <para>Guarantees: per topic, handlers see messages in seq order, each at most once, across reconnects (a message at
/// or below the last seen seq is dropped). After a lost connection the client reconnects with jittered exponential
/// backoff and resumes every topic from the last position seen (<c>since</c>); every missed message still in the
/// topic's history is delivered. A gap that cannot be filled is never skipped in silence: it is reported through
/// <see cref="RecoveryFailed"/>, and delivery goes on from the current position. That covers a resume answered
/// <c>recovered:false</c>, a topic whose epoch changed (its history was lost; the new epoch is delivered from its seq 1),
/// and a <c>reset</c> from the gateway (a message it missed cannot be filled), after which the client subscribes again
/// from its last position by itself.</para>
/// <para>Delta compression (a namespace with <c>Delta</c> on): a topic subscribed with <c>delta: true</c> receives its
/// messages as Fossil deltas against the message before whenever that is smaller; the client applies them, so handlers
/// see the publisher's JSON byte for byte either way.</para>
/// <para>Handlers run one at a time on the client's receive loop, so a slow handler slows only this client (the
/// gateway may then close it as slow; it reconnects and resumes).</para>
/// </summary>
public sealed class PushClient : IAsyncDisposable
{
    private const string SubProtocol = "orleanspush.v1.json";
    private readonly PushClientOptions _options;
    private readonly Uri[] _urls;
    private int _urlIndex;
    private readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private Session? _session;
    private Task? _loop;
    private int _state = (int)PushConnectionState.Disconnected;
    private long _nextId;

    public PushClient(PushClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _urls = [options.Url, .. options.FallbackUrls];
    }

    /// <summary>A topic's history could not fill a gap (see <see cref="RecoveryFailure"/>). Raised on the receive loop.</summary>
    public event Action<RecoveryFailure>? RecoveryFailed;

    public event Action<PushConnectionState>? StateChanged;

    /// <summary>A handler threw, or a resubscribe after a reconnect was refused. The client carries on.</summary>
    public event Action<Exception>? Error;

    public PushConnectionState State => (PushConnectionState)Volatile.Read(ref _state);

    /// <summary>How many times the client has connected again after losing a connection.</summary>
    public int Reconnects { get; private set; }

    /// <summary>The gateway address of the current (or next) connection.</summary>
    public Uri CurrentUrl => _urls[Volatile.Read(ref _urlIndex)];

    /// <summary>The last position seen on a subscribed topic, or null.</summary>
    public PushPosition? PositionOf(string topic)
    {
        lock (_subscriptions)
        {
            return _subscriptions.TryGetValue(topic, out var s) && s.Epoch is { } epoch ? new PushPosition(epoch, s.Seq) : null;
        }
    }

    /// <summary>Connects (trying each address once, throwing if none answers) and keeps the client connected until
    /// disposed.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_loop is not null)
        {
            throw new InvalidOperationException("The client is already started.");
        }

        SetState(PushConnectionState.Connecting);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token);
        ClientWebSocket socket;
        for (var tried = 1; ; tried++)
        {
            try
            {
                socket = await ConnectAsync(linked.Token).ConfigureAwait(false);
                break;
            }
            catch (Exception ex) when (tried < _urls.Length && !linked.IsCancellationRequested
                && ex is WebSocketException or OperationCanceledException or HttpRequestException or IOException)
            {
                NextUrl();
            }
            catch
            {
                SetState(PushConnectionState.Disconnected);
                throw;
            }
        }

        _loop = RunAsync(socket);
    }

    /// <summary>Subscribes <paramref name="handler"/> to <paramref name="topic"/> (replacing an earlier handler of that
    /// topic). While connected, completes when the gateway has confirmed; while disconnected, at once: the subscription
    /// is made when the client reconnects.</summary>
    /// <exception cref="PushException">The gateway refused (<c>bad_topic</c>, <c>forbidden</c>, ...).</exception>
    public Task SubscribeAsync(string topic, Func<PushMessage, ValueTask> handler, CancellationToken cancellationToken = default) =>
        SubscribeAsync(topic, handler, delta: false, cancellationToken);

    /// <summary>As <see cref="SubscribeAsync(string, Func{PushMessage, ValueTask}, CancellationToken)"/>; with
    /// <paramref name="delta"/>, asks for Fossil deltas (used where the topic's namespace allows them).</summary>
    public async Task SubscribeAsync(string topic, Func<PushMessage, ValueTask> handler, bool delta, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ArgumentNullException.ThrowIfNull(handler);
        Subscription subscription;
        lock (_subscriptions)
        {
            if (_subscriptions.TryGetValue(topic, out var existing))
            {
                existing.Handler = handler;
                return;
            }

            subscription = new Subscription(topic, handler) { Delta = delta };
            _subscriptions.Add(topic, subscription);
        }

        if (Volatile.Read(ref _session) is not { } session)
        {
            return;
        }

        try
        {
            await SendSubscribeAsync(session, subscription, cancellationToken).ConfigureAwait(false);
        }
        catch (PushException ex) when (ex.Code != "unavailable")
        {
            lock (_subscriptions)
            {
                _subscriptions.Remove(topic);
            }

            throw;
        }
        catch (Exception ex) when (ex is PushException or WebSocketException or ObjectDisposedException && !cancellationToken.IsCancellationRequested)
        {
            // The connection went away mid-request: the subscription stands and is made on reconnect.
        }
    }

    /// <summary>Subscribes a synchronous handler.</summary>
    public Task SubscribeAsync(string topic, Action<PushMessage> handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return SubscribeAsync(topic, m =>
        {
            handler(m);
            return ValueTask.CompletedTask;
        }, cancellationToken);
    }

    public async Task UnsubscribeAsync(string topic, CancellationToken cancellationToken = default)
    {
        lock (_subscriptions)
        {
            if (!_subscriptions.Remove(topic))
            {
                return;
            }
        }

        if (Volatile.Read(ref _session) is { } session)
        {
            await RequestAsync(session, w => w.WriteString("topic", topic), "unsub", null, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Publishes <paramref name="data"/> (serialised as JSON) with the raw protocol's <c>pub</c>, where the
    /// topic's namespace allows clients to publish. Not retried: a publish whose answer is lost may or may not have
    /// happened (backends that need safe retries use <see cref="PushPublisher"/> and idempotency keys).</summary>
    /// <exception cref="PushException">Refused, or not connected (<c>unavailable</c>).</exception>
    public Task<PushPosition> PublishAsync<T>(string topic, T data, CancellationToken cancellationToken = default) =>
        PublishJsonAsync(topic, JsonSerializer.SerializeToUtf8Bytes(data), cancellationToken);

    /// <summary>Publishes raw JSON (one UTF-8 JSON value).</summary>
    public async Task<PushPosition> PublishJsonAsync(string topic, ReadOnlyMemory<byte> json, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        var session = Volatile.Read(ref _session) ?? throw new PushException("unavailable", "Not connected.");
        var ok = await RequestAsync(session, w =>
        {
            w.WriteString("topic", topic);
            w.WritePropertyName("data");
            w.WriteRawValue(json.Span);
        }, "pub", null, cancellationToken).ConfigureAwait(false);
        return new PushPosition(ok.GetProperty("epoch").GetString()!, ok.GetProperty("seq").GetInt64());
    }

    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        if (Volatile.Read(ref _session) is { } session)
        {
            await session.CloseAsync().ConfigureAwait(false);
        }

        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }

        SetState(PushConnectionState.Disconnected);
        _stopping.Dispose();
    }

    private async Task<ClientWebSocket> ConnectAsync(CancellationToken cancellationToken)
    {
        var query = new StringBuilder();
        if (_options.AccessTokenProvider is { } provider && await provider(cancellationToken).ConfigureAwait(false) is { Length: > 0 } token)
        {
            query.Append("access_token=").Append(Uri.EscapeDataString(token));
        }

        if (_options.User is { Length: > 0 } user)
        {
            query.Append(query.Length > 0 ? "&" : string.Empty).Append("user=").Append(Uri.EscapeDataString(user));
        }

        var builder = new UriBuilder(CurrentUrl);
        var existing = builder.Query.TrimStart('?');
        builder.Query = existing.Length == 0 ? query.ToString() : query.Length == 0 ? existing : existing + "&" + query;
        var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol(SubProtocol);
        socket.Options.KeepAliveInterval = _options.KeepAliveInterval;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.RequestTimeout);
            await socket.ConnectAsync(builder.Uri, timeout.Token).ConfigureAwait(false);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The connection loop: run a session until it ends, then reconnect with backoff, until disposed.</summary>
    private async Task RunAsync(ClientWebSocket socket)
    {
        var attempt = 0;
        var first = true;
        while (!_stopping.IsCancellationRequested)
        {
            var session = new Session(socket);
            Volatile.Write(ref _session, session);
            if (!first)
            {
                Reconnects++;
            }

            first = false;
            SetState(PushConnectionState.Connected);
            var receiving = ReceiveAsync(session);
            _ = ResubscribeAsync(session);
            await receiving.ConfigureAwait(false);
            Volatile.Write(ref _session, null);
            session.Fail();
            socket.Dispose();
            if (_stopping.IsCancellationRequested)
            {
                break;
            }

            SetState(PushConnectionState.Reconnecting);
            attempt = 0; // the first retry comes soon (jittered): after a "bye" the gateway asked for just that
            NextUrl(); // the gateway that went away (or said bye) is the last one to try again
            while (true)
            {
                try
                {
                    await Task.Delay(Backoff(attempt), _stopping.Token).ConfigureAwait(false);
                    socket = await ConnectAsync(_stopping.Token).ConfigureAwait(false);
                    break;
                }
                catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or HttpRequestException or IOException)
                {
                    // Every address failed once: back off further before the next round.
                    if (NextUrl() == 0)
                    {
                        attempt++;
                    }
                }
            }
        }
    }

    private int NextUrl()
    {
        var next = (_urlIndex + 1) % _urls.Length;
        Volatile.Write(ref _urlIndex, next);
        return next;
    }

    /// <summary>Exponential backoff with "equal jitter": between half and all of base·2^attempt, capped.</summary>
    private TimeSpan Backoff(int attempt)
    {
        var ceiling = Math.Min(_options.ReconnectMaxDelay.TotalMilliseconds, _options.ReconnectBaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(attempt, 30)));
        return TimeSpan.FromMilliseconds((ceiling / 2) + (Random.Shared.NextDouble() * ceiling / 2));
    }

    /// <summary>After a (re)connect: every subscription again, each from its last seen position.</summary>
    private async Task ResubscribeAsync(Session session)
    {
        Subscription[] all;
        lock (_subscriptions)
        {
            all = [.. _subscriptions.Values];
        }

        await Task.WhenAll(all.Select(async s =>
        {
            try
            {
                await SendSubscribeAsync(session, s, CancellationToken.None).ConfigureAwait(false);
            }
            catch (PushException ex) when (ex.Code != "unavailable")
            {
                Error?.Invoke(new PushException(ex.Code, $"Resubscribing to {s.Topic} was refused: {ex.Message}", null, ex));
            }
            catch (Exception ex) when (ex is PushException or WebSocketException or ObjectDisposedException or OperationCanceledException)
            {
                // The connection went away again; the next session resubscribes.
            }
        })).ConfigureAwait(false);
    }

    private Task SendSubscribeAsync(Session session, Subscription s, CancellationToken cancellationToken)
    {
        // Read on the caller's thread, but positions move only on the receive loop; a stale read only means an earlier
        // since, and the duplicates it replays are dropped by seq.
        string? epoch;
        long seq;
        lock (_subscriptions)
        {
            (epoch, seq) = (s.Epoch, s.Seq);
        }

        return RequestAsync(session, w =>
        {
            w.WriteString("topic", s.Topic);
            if (s.Delta)
            {
                w.WriteString("delta", "fossil");
            }

            if (epoch is not null)
            {
                w.WriteStartObject("since");
                w.WriteString("epoch", epoch);
                w.WriteNumber("seq", seq);
                w.WriteEndObject();
            }
        }, "sub", ok => OnSubscribed(s, ok, resumed: epoch is not null), cancellationToken, s);
    }

    /// <param name="catchingUp">For a <c>sub</c>: its answer comes after the replay, which may take long for a large
    /// backlog; the wait goes on as long as the replay keeps arriving.</param>
    private async Task<JsonElement> RequestAsync(Session session, Action<Utf8JsonWriter> fields, string op, Action<JsonElement>? onOk, CancellationToken cancellationToken,
        Subscription? catchingUp = null)
    {
        var id = Interlocked.Increment(ref _nextId);
        var pending = new Pending(onOk);
        session.Pending[id] = pending;
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("op", op);
            w.WriteNumber("id", id);
            fields(w);
            w.WriteEndObject();
        }

        try
        {
            await session.SendAsync(buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
            while (true)
            {
                try
                {
                    return await pending.Reply.Task.WaitAsync(_options.RequestTimeout, cancellationToken).ConfigureAwait(false);
                }
                catch (TimeoutException) when (catchingUp is not null
                    && Environment.TickCount64 - Volatile.Read(ref catchingUp.LastMessageAt) < _options.RequestTimeout.TotalMilliseconds)
                {
                    // Still replaying: keep waiting.
                }
            }
        }
        catch (TimeoutException ex)
        {
            throw new PushException("unavailable", "The gateway did not answer in time.", null, ex);
        }
        finally
        {
            session.Pending.TryRemove(id, out _);
        }
    }

    private async Task ReceiveAsync(Session session)
    {
        var buffer = new ArrayBufferWriter<byte>(4096);
        try
        {
            while (true)
            {
                buffer.ResetWrittenCount();
                ValueWebSocketReceiveResult result;
                do
                {
                    result = await session.Socket.ReceiveAsync(buffer.GetMemory(4096), CancellationToken.None).ConfigureAwait(false);
                    buffer.Advance(result.Count);
                }
                while (!result.EndOfMessage && result.MessageType != WebSocketMessageType.Close);

                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return;
                }

                await HandleFrameAsync(session, buffer.WrittenMemory).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or IOException or ObjectDisposedException or OperationCanceledException)
        {
        }
    }

    private async Task HandleFrameAsync(Session session, ReadOnlyMemory<byte> frame)
    {
        string? op = null, topic = null, epoch = null;
        long? id = null;
        long seq = 0;
        ReadOnlyMemory<byte> data = default;
        string? text = null, delta = null;
        byte[]? binary = null;
        try
        {
            var reader = new Utf8JsonReader(frame.Span);
            reader.Read();
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case "op":
                        op = reader.GetString();
                        break;
                    case "id":
                        id = reader.GetInt64();
                        break;
                    case "topic":
                        topic = reader.GetString();
                        break;
                    case "epoch":
                        epoch = reader.GetString();
                        break;
                    case "seq":
                        seq = reader.GetInt64();
                        break;
                    case "data":
                        var start = (int)reader.TokenStartIndex;
                        reader.Skip();
                        data = frame[start..(int)reader.BytesConsumed];
                        break;
                    case "data_b64":
                        binary = reader.GetBytesFromBase64();
                        break;
                    case "text":
                        text = reader.GetString();
                        break;
                    case "delta":
                        delta = reader.GetString();
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            Error?.Invoke(new PushException("bad_request", "The gateway sent a frame this client cannot read.", null, ex));
            return;
        }

        switch (op)
        {
            case "msg" when topic is not null && epoch is not null:
                if (binary is not null)
                {
                    await OnMessageAsync(new PushMessage(topic, epoch, seq, binary, isBinary: true)).ConfigureAwait(false);
                }
                else if ((text is null && delta is null ? data.ToArray() : Payload(session, topic, epoch, seq, text, delta)) is { } payload)
                {
                    await OnMessageAsync(new PushMessage(topic, epoch, seq, payload)).ConfigureAwait(false);
                }

                break;
            case "ok" or "error" when id is { } requestId && session.Pending.TryGetValue(requestId, out var pending):
                var json = JsonDocument.Parse(frame).RootElement.Clone();
                if (op == "ok")
                {
                    pending.OnOk?.Invoke(json);
                    pending.Reply.TrySetResult(json);
                }
                else
                {
                    pending.Reply.TrySetException(new PushException(
                        json.TryGetProperty("code", out var code) ? code.GetString() ?? "unavailable" : "unavailable",
                        json.TryGetProperty("message", out var message) ? message.GetString() ?? string.Empty : string.Empty));
                }

                break;
            case "bye":
                session.SaidBye = true;
                break;
            case "reset" when topic is not null:
                OnReset(session, topic);
                break;
        }
    }

    /// <summary>The payload of a delta subscription's message: <paramref name="text"/> whole, or <paramref name="delta"/>
    /// applied to the previous message's bytes (each character of the delta is one byte). Null when the delta cannot be
    /// applied (this client does not hold seq − 1: never, unless the gateway erred): reported, and the topic is subscribed
    /// again from the last position seen, which sends the next message whole.</summary>
    private byte[]? Payload(Session session, string topic, string epoch, long seq, string? text, string? delta)
    {
        Subscription? s;
        lock (_subscriptions)
        {
            _subscriptions.TryGetValue(topic, out s);
        }

        if (s is null)
        {
            return null;
        }

        byte[] bytes;
        try
        {
            if (text is not null)
            {
                bytes = Encoding.UTF8.GetBytes(text);
            }
            else if (s.DeltaBase is { } source && s.DeltaBaseEpoch == epoch && s.DeltaBaseSeq == seq - 1)
            {
                bytes = FossilDelta.Apply(source, Encoding.Latin1.GetBytes(delta!));
            }
            else
            {
                throw new FormatException($"A delta for seq {seq} came without seq {seq - 1} before it.");
            }
        }
        catch (FormatException ex)
        {
            s.DeltaBase = null;
            Error?.Invoke(new PushException("bad_request", $"A message of {topic} could not be rebuilt from its delta.", null, ex));
            OnReset(session, topic);
            return null;
        }

        // Touched only by the receive loop.
        s.DeltaBase = bytes;
        s.DeltaBaseEpoch = epoch;
        s.DeltaBaseSeq = seq;
        return bytes;
    }

    /// <summary>The gateway ended a subscription because a message it missed cannot be filled: subscribe again from the
    /// last position seen; the answer (<c>recovered:false</c>) is reported through <see cref="RecoveryFailed"/>.</summary>
    private void OnReset(Session session, string topic)
    {
        Subscription? s;
        lock (_subscriptions)
        {
            _subscriptions.TryGetValue(topic, out s);
        }

        if (s is null)
        {
            return; // not a topic this client follows (an automatic subscription it never asked for)
        }

        _ = ResubscribeOneAsync();

        async Task ResubscribeOneAsync()
        {
            try
            {
                await SendSubscribeAsync(session, s, CancellationToken.None).ConfigureAwait(false);
            }
            catch (PushException ex) when (ex.Code != "unavailable")
            {
                Error?.Invoke(new PushException(ex.Code, $"Subscribing to {topic} again after a reset was refused: {ex.Message}", null, ex));
            }
            catch (Exception ex) when (ex is PushException or WebSocketException or ObjectDisposedException or OperationCanceledException)
            {
                // The connection went away; the next session resubscribes.
            }
        }
    }

    private async ValueTask OnMessageAsync(PushMessage message)
    {
        Subscription? s;
        RecoveryFailure? gap = null;
        lock (_subscriptions)
        {
            if (!_subscriptions.TryGetValue(message.Topic, out s))
            {
                return;
            }

            if (s.Epoch is { } epoch)
            {
                if (epoch == message.Epoch && message.Seq <= s.Seq)
                {
                    return; // Seen already (a replay overlapping what was delivered).
                }

                if (epoch != message.Epoch || message.Seq > s.Seq + 1)
                {
                    gap = new RecoveryFailure(s.Topic, new PushPosition(epoch, s.Seq), new PushPosition(message.Epoch, message.Seq - 1));
                    s.GapReported = true;
                }
            }

            s.Epoch = message.Epoch;
            s.Seq = message.Seq;
            Volatile.Write(ref s.LastMessageAt, Environment.TickCount64);
        }

        if (gap is not null)
        {
            RecoveryFailed?.Invoke(gap);
        }

        try
        {
            await s.Handler(message).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Error?.Invoke(ex);
        }
    }

    /// <summary>A <c>sub</c> was answered (on the receive loop, before any later frame is read).</summary>
    private void OnSubscribed(Subscription s, JsonElement ok, bool resumed)
    {
        var epoch = ok.GetProperty("epoch").GetString()!;
        var seq = ok.GetProperty("seq").GetInt64();
        RecoveryFailure? gap = null;
        lock (_subscriptions)
        {
            if (resumed && ok.TryGetProperty("recovered", out var recovered) && !recovered.GetBoolean() && !s.GapReported)
            {
                gap = new RecoveryFailure(s.Topic, s.Epoch is { } last ? new PushPosition(last, s.Seq) : null, new PushPosition(epoch, seq));
            }

            s.GapReported = false;

            // Messages may have arrived before this answer: never move back within an epoch.
            if (s.Epoch != epoch || seq > s.Seq)
            {
                s.Epoch = epoch;
                s.Seq = seq;
            }
        }

        if (gap is not null)
        {
            RecoveryFailed?.Invoke(gap);
        }
    }

    private void SetState(PushConnectionState state)
    {
        if (Interlocked.Exchange(ref _state, (int)state) != (int)state)
        {
            StateChanged?.Invoke(state);
        }
    }

    private sealed class Subscription(string topic, Func<PushMessage, ValueTask> handler)
    {
        public string Topic { get; } = topic;

        public Func<PushMessage, ValueTask> Handler { get; set; } = handler;

        /// <summary>The last position seen; null until the first answer or message.</summary>
        public string? Epoch { get; set; }

        public long Seq { get; set; }

        /// <summary>Asks for Fossil deltas.</summary>
        public bool Delta { get; init; }

        /// <summary>The bytes of the last message of a delta subscription, the source of the next delta (receive loop
        /// only).</summary>
        public byte[]? DeltaBase { get; set; }

        public string? DeltaBaseEpoch { get; set; }

        public long DeltaBaseSeq { get; set; }

        /// <summary>A gap was reported from the messages of the current resume (so its answer need not report it again).</summary>
        public bool GapReported { get; set; }

        /// <summary>When the last message arrived (<see cref="Environment.TickCount64"/>).</summary>
        public long LastMessageAt;
    }

    private sealed class Pending(Action<JsonElement>? onOk)
    {
        public Action<JsonElement>? OnOk { get; } = onOk;

        public TaskCompletionSource<JsonElement> Reply { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>One WebSocket connection and its requests in flight.</summary>
    private sealed class Session(ClientWebSocket socket)
    {
        private readonly SemaphoreSlim _send = new(1, 1);

        public ClientWebSocket Socket { get; } = socket;

        public ConcurrentDictionary<long, Pending> Pending { get; } = new();

        public bool SaidBye { get; set; }

        public async Task SendAsync(ReadOnlyMemory<byte> frame, CancellationToken cancellationToken)
        {
            await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await Socket.SendAsync(frame, WebSocketMessageType.Text, true, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _send.Release();
            }
        }

        public void Fail()
        {
            foreach (var pending in Pending.Values)
            {
                pending.Reply.TrySetException(new PushException("unavailable", "The connection was lost."));
            }
        }

        public async Task CloseAsync()
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await Socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or ObjectDisposedException)
            {
                Socket.Abort();
            }
        }
    }
}
