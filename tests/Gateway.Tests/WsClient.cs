using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;

namespace OrleansPush.Gateway.Tests;

/// <summary>A raw-protocol test client on a real ClientWebSocket. Every wait is bounded.</summary>
public sealed class WsClient : IAsyncDisposable
{
    // Generous: the whole suite shares two cores, and a bounded wait should fail on a lost message, not on a busy machine.
    public static readonly TimeSpan DefaultWait = TimeSpan.FromSeconds(30);
    private readonly ClientWebSocket _socket;
    private readonly Channel<Frame> _frames = Channel.CreateUnbounded<Frame>();
    private readonly Task? _receive;
    private long _nextId;

    private WsClient(ClientWebSocket socket, bool read)
    {
        _socket = socket;
        _receive = read ? ReceiveLoopAsync() : null;
    }

    public WebSocketState State => _socket.State;

    public WebSocketCloseStatus? CloseStatus => _socket.CloseStatus;

    /// <summary>Connects; with <paramref name="read"/> false the client never reads (a stalled consumer).</summary>
    public static async Task<WsClient> ConnectAsync(Uri uri, bool read = true, int receiveBuffer = 0, string? cookie = null)
    {
        var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("orleanspush.v1.json");
        if (cookie is not null)
        {
            socket.Options.SetRequestHeader("Cookie", cookie);
        }

        if (receiveBuffer > 0)
        {
            socket.Options.SetBuffer(receiveBuffer, 4096);
        }

        using var cts = new CancellationTokenSource(DefaultWait);
        await socket.ConnectAsync(uri, cts.Token);
        Assert.Equal("orleanspush.v1.json", socket.SubProtocol);
        return new WsClient(socket, read);
    }

    public long NextId() => Interlocked.Increment(ref _nextId);

    public Task SendAsync(string text) => SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text);

    public async Task SendAsync(byte[] bytes, WebSocketMessageType type)
    {
        using var cts = new CancellationTokenSource(DefaultWait);
        await _socket.SendAsync(bytes, type, true, cts.Token);
    }

    /// <summary>Sends a request and waits for its <c>ok</c> or <c>error</c> (other frames stay queued in order).</summary>
    public async Task<Frame> RequestAsync(string op, object? fields = null)
    {
        var id = NextId();
        var frame = new Dictionary<string, object?> { ["op"] = op, ["id"] = id };
        if (fields is not null)
        {
            foreach (var p in JsonSerializer.SerializeToElement(fields).EnumerateObject())
            {
                frame[p.Name] = p.Value;
            }
        }

        await SendAsync(JsonSerializer.Serialize(frame));
        return await ReplyAsync(id);
    }

    public Task<Frame> SubscribeAsync(string topic, object? since = null, int last = 0) =>
        RequestAsync("sub", since is null ? (last > 0 ? new { topic, last } : new { topic }) : new { topic, since });

    private readonly List<Frame> _skipped = [];

    /// <summary>The reply to request <paramref name="id"/>; frames before it are kept for <see cref="NextAsync"/>.</summary>
    public async Task<Frame> ReplyAsync(long id, TimeSpan? wait = null)
    {
        var skippedIndex = _skipped.FindIndex(f => f.Id == id);
        if (skippedIndex >= 0)
        {
            var found = _skipped[skippedIndex];
            _skipped.RemoveAt(skippedIndex);
            return found;
        }

        using var cts = new CancellationTokenSource(wait ?? DefaultWait);
        while (true)
        {
            var frame = await _frames.Reader.ReadAsync(cts.Token);
            if (frame.Id == id && frame.Op is "ok" or "error")
            {
                return frame;
            }

            _skipped.Add(frame);
        }
    }

    /// <summary>The next frame of any kind, in arrival order.</summary>
    public async Task<Frame> NextAsync(TimeSpan? wait = null)
    {
        if (_skipped.Count > 0)
        {
            var first = _skipped[0];
            _skipped.RemoveAt(0);
            return first;
        }

        using var cts = new CancellationTokenSource(wait ?? DefaultWait);
        return await _frames.Reader.ReadAsync(cts.Token);
    }

    /// <summary>The next <paramref name="count"/> <c>msg</c> frames (other frames are skipped).</summary>
    public async Task<List<Frame>> MessagesAsync(int count, TimeSpan? wait = null)
    {
        var messages = new List<Frame>(count);
        using var cts = new CancellationTokenSource(wait ?? DefaultWait);
        while (messages.Count < count)
        {
            var frame = _skipped.Count > 0 ? TakeSkipped() : await _frames.Reader.ReadAsync(cts.Token);
            if (frame.Op == "msg")
            {
                messages.Add(frame);
            }
        }

        return messages;
    }

    /// <summary>Up to <paramref name="count"/> <c>msg</c> frames, or what arrived within <paramref name="wait"/>: for an
    /// assertion that shows what came when something did not.</summary>
    public async Task<List<Frame>> MessagesWithinAsync(int count, TimeSpan? wait = null)
    {
        var messages = new List<Frame>(count);
        using var cts = new CancellationTokenSource(wait ?? DefaultWait);
        try
        {
            while (messages.Count < count)
            {
                var frame = _skipped.Count > 0 ? TakeSkipped() : await _frames.Reader.ReadAsync(cts.Token);
                if (frame.Op == "msg")
                {
                    messages.Add(frame);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException)
        {
        }

        return messages;
    }

    /// <summary>True when no further frame arrives within <paramref name="quiet"/>.</summary>
    public async Task<bool> IsQuietAsync(TimeSpan quiet)
    {
        if (_skipped.Count > 0)
        {
            return false;
        }

        using var cts = new CancellationTokenSource(quiet);
        try
        {
            await _frames.Reader.WaitToReadAsync(cts.Token);
            return false;
        }
        catch (OperationCanceledException)
        {
            return true;
        }
    }

    /// <summary>Reads until the server ends the connection; returns the frames read on the way.</summary>
    public async Task<List<Frame>> ReadToEndAsync(TimeSpan wait)
    {
        var frames = new List<Frame>(_skipped);
        _skipped.Clear();
        using var cts = new CancellationTokenSource(wait);
        await foreach (var frame in _frames.Reader.ReadAllAsync(cts.Token))
        {
            frames.Add(frame);
        }

        return frames;
    }

    /// <summary>Starts reading on a client created with <c>read: false</c> and returns everything until the end.</summary>
    public async Task<(List<Frame> Frames, bool Ended)> DrainAsync(TimeSpan wait)
    {
        var (frames, ended, _) = await ReadDirectlyAsync(_ => false, framesPerPause: 0, TimeSpan.Zero, wait);
        return (frames, ended);
    }

    /// <summary>On a client created with <c>read: false</c>: reads slowly but steadily (a pause after every
    /// <paramref name="framesPerPause"/> frames) until <paramref name="stopWhen"/> holds for a frame (returned with
    /// <c>Ended</c> false) or the server ends the connection (<c>Ended</c> true).</summary>
    public async Task<(List<Frame> Frames, bool Ended)> DrainSlowlyAsync(int framesPerPause, TimeSpan pause, Func<Frame, bool> stopWhen, TimeSpan wait)
    {
        var (frames, ended, timedOut) = await ReadDirectlyAsync(stopWhen, framesPerPause, pause, wait);
        Assert.False(timedOut, $"timed out after {frames.Count} frames");
        return (frames, ended);
    }

    private async Task<(List<Frame> Frames, bool Ended, bool TimedOut)> ReadDirectlyAsync(Func<Frame, bool> stopWhen, int framesPerPause, TimeSpan pause, TimeSpan wait)
    {
        var frames = new List<Frame>();
        var buffer = new byte[1 << 20];
        using var cts = new CancellationTokenSource(wait);
        try
        {
            while (true)
            {
                var length = 0;
                ValueWebSocketReceiveResult result;
                do
                {
                    result = await _socket.ReceiveAsync(buffer.AsMemory(length), cts.Token);
                    length += result.Count;
                }
                while (!result.EndOfMessage);

                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return (frames, true, false);
                }

                var frame = Frame.Parse(buffer.AsSpan(0, length).ToArray());
                frames.Add(frame);
                if (stopWhen(frame))
                {
                    return (frames, false, false);
                }

                if (framesPerPause > 0 && frames.Count % framesPerPause == 0)
                {
                    await Task.Delay(pause, cts.Token);
                }
            }
        }
        catch (WebSocketException)
        {
            return (frames, true, false);
        }
        catch (OperationCanceledException)
        {
            return (frames, false, true);
        }
    }

    private Frame TakeSkipped()
    {
        var first = _skipped[0];
        _skipped.RemoveAt(0);
        return first;
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = new byte[1 << 20];
        try
        {
            while (true)
            {
                var length = 0;
                ValueWebSocketReceiveResult result;
                do
                {
                    result = await _socket.ReceiveAsync(buffer.AsMemory(length), CancellationToken.None);
                    length += result.Count;
                }
                while (!result.EndOfMessage);

                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }

                _frames.Writer.TryWrite(Frame.Parse(buffer.AsSpan(0, length).ToArray()));
            }
        }
        catch (WebSocketException)
        {
        }
        catch (Exception ex) when (ex is ObjectDisposedException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            _frames.Writer.TryComplete();
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_socket.State == WebSocketState.Open)
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cts.Token);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException)
        {
        }

        _socket.Abort();
        _socket.Dispose();
        if (_receive is not null)
        {
            await _receive;
        }
    }
}

/// <summary>A server frame, with its raw text (so <c>data</c> can be checked byte for byte).</summary>
public sealed record Frame(string Raw, JsonElement Json)
{
    public string? Op => Json.TryGetProperty("op", out var op) ? op.GetString() : null;

    public long? Id => Json.TryGetProperty("id", out var id) ? id.GetInt64() : null;

    public string? Topic => Json.TryGetProperty("topic", out var t) ? t.GetString() : null;

    public string? Code => Json.TryGetProperty("code", out var c) ? c.GetString() : null;

    public string? Epoch => Json.TryGetProperty("epoch", out var e) ? e.GetString() : null;

    public long Seq => Json.TryGetProperty("seq", out var s) ? s.GetInt64() : -1;

    public bool? Recovered => Json.TryGetProperty("recovered", out var r) ? r.GetBoolean() : null;

    /// <summary>The raw text of <c>data</c>, as the server wrote it.</summary>
    public string RawData
    {
        get
        {
            var start = Raw.IndexOf("\"data\":", StringComparison.Ordinal);
            return start < 0 ? string.Empty : Raw[(start + 7)..^1];
        }
    }

    public static Frame Parse(byte[] bytes)
    {
        var raw = Encoding.UTF8.GetString(bytes);
        return new Frame(raw, JsonDocument.Parse(raw).RootElement.Clone());
    }

    public override string ToString() => Raw;
}
