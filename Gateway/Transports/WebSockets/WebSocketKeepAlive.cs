using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Transports.WebSockets;

/// <summary>Keeps idle raw WebSockets alive with one timer for the whole gateway instead of one per socket.
/// <para>The WebSocket's own keep-alive arms a timer per socket; with tens of thousands of idle sockets the runtime's
/// timer queue walking them cost more than the pings themselves. Here every upgraded <c>/ws</c> stream is wrapped
/// (<see cref="KeepAliveStream"/>), and a sweep every tenth of <see cref="GatewayOptions.KeepAliveInterval"/> sends an
/// unsolicited pong (RFC 6455 §5.5.3, what the built-in keep-alive sends) to each socket that wrote nothing for the
/// interval. A socket that carries messages is never pinged. The sweep runs only while sockets are open.</para></summary>
internal sealed class WebSocketKeepAlive : IDisposable
{
    private readonly ConcurrentDictionary<KeepAliveStream, byte> _streams = new();
    private readonly long _intervalMs;
    private readonly ITimer? _timer;
    private readonly TimeSpan _tick;
    private int _running;

    public WebSocketKeepAlive(IOptions<GatewayOptions> options, TimeProvider time)
    {
        var interval = options.Value.KeepAliveInterval;
        _intervalMs = (long)interval.TotalMilliseconds;
        if (interval > TimeSpan.Zero)
        {
            _tick = TimeSpan.FromMilliseconds(Math.Max(50, _intervalMs / 10));
            _timer = time.CreateTimer(static state => ((WebSocketKeepAlive)state!).Sweep(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Whether sockets are kept alive here (otherwise the interval is zero: no keep-alive at all).</summary>
    public bool Enabled => _timer is not null;

    /// <summary>Before the WebSocket middleware sees the request: its upgrade will hand out a stream kept alive here.</summary>
    public void Attach(HttpContext context)
    {
        if (Enabled && context.Features.Get<IHttpUpgradeFeature>() is { IsUpgradableRequest: true } upgrade)
        {
            context.Features.Set<IHttpUpgradeFeature>(new Upgrade(upgrade, this, context));
        }
    }

    /// <summary>Whether this request's socket is kept alive here, so the WebSocket itself must not ping.</summary>
    public static bool IsAttached(HttpContext context) => context.Features.Get<IHttpUpgradeFeature>() is Upgrade;

    internal int Count => _streams.Count;

    private void Add(KeepAliveStream stream)
    {
        _streams.TryAdd(stream, 0);
        if (Interlocked.Exchange(ref _running, 1) == 0)
        {
            _timer!.Change(_tick, _tick);
        }
    }

    internal void Remove(KeepAliveStream stream) => _streams.TryRemove(stream, out _);

    private void Sweep()
    {
        if (_streams.IsEmpty)
        {
            // Idle gateway, idle timer: stopped first, then marked stopped, then looked at again, so a socket added
            // meanwhile either sees it stopped (and starts it) or is seen here (and this starts it).
            _timer!.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            Volatile.Write(ref _running, 0);
            if (!_streams.IsEmpty && Interlocked.Exchange(ref _running, 1) == 0)
            {
                _timer.Change(_tick, _tick);
            }

            return;
        }

        var now = Environment.TickCount64;
        foreach (var (stream, _) in _streams)
        {
            stream.PingIfIdle(now, _intervalMs);
        }
    }

    public void Dispose() => _timer?.Dispose();

    private sealed class Upgrade(IHttpUpgradeFeature inner, WebSocketKeepAlive owner, HttpContext context) : IHttpUpgradeFeature
    {
        public bool IsUpgradableRequest => inner.IsUpgradableRequest;

        public async Task<Stream> UpgradeAsync()
        {
            var stream = new KeepAliveStream(await inner.UpgradeAsync(), owner);
            context.Response.RegisterForDispose(stream);
            owner.Add(stream);
            return stream;
        }
    }
}

/// <summary>An upgraded WebSocket stream that lets <see cref="WebSocketKeepAlive"/> slip a pong frame in between the
/// WebSocket's own frames, never into one. The WebSocket writes one frame at a time (a write, then a flush); the
/// stream is <c>Frame</c> from the write to the flush and <c>Pong</c> while a pong is written, and each side waits
/// for the other only in that rare overlap: the hot path is one compare-exchange per write and per flush.</summary>
internal sealed class KeepAliveStream(Stream inner, WebSocketKeepAlive owner) : Stream
{
    // FIN + opcode 0xA (pong), no payload, unmasked (server to client).
    private static readonly byte[] _pongFrame = [0x8A, 0x00];
    private const int Free = 0;
    private const int Frame = 1;
    private const int Pong = 2;
    private int _state;
    private long _lastWrite = Environment.TickCount64;
    private Task? _pong;

    public override bool CanRead => inner.CanRead;

    public override bool CanSeek => false;

    public override bool CanWrite => inner.CanWrite;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => inner.ReadAsync(buffer, offset, count, cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Volatile.Write(ref _lastWrite, Environment.TickCount64);
        return Interlocked.CompareExchange(ref _state, Frame, Free) == Pong ? WriteAfterPongAsync(buffer, cancellationToken) : inner.WriteAsync(buffer, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task FlushAsync(CancellationToken cancellationToken)
    {
        var flush = inner.FlushAsync(cancellationToken);
        if (flush.IsCompletedSuccessfully)
        {
            Interlocked.CompareExchange(ref _state, Free, Frame);
            return flush;
        }

        return FinishFlushAsync(flush);
    }

    public override void Flush() => FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Sends a pong when nothing was written for <paramref name="intervalMs"/> and no frame is on its way.</summary>
    internal void PingIfIdle(long now, long intervalMs)
    {
        if (now - Volatile.Read(ref _lastWrite) < intervalMs || Interlocked.CompareExchange(ref _state, Pong, Free) != Free)
        {
            return;
        }

        Volatile.Write(ref _lastWrite, now);
        Volatile.Write(ref _pong, SendPongAsync());
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            owner.Remove(this);
            inner.Dispose();
        }

        base.Dispose(disposing);
    }

    private async Task FinishFlushAsync(Task flush)
    {
        try
        {
            await flush;
        }
        finally
        {
            Interlocked.CompareExchange(ref _state, Free, Frame);
        }
    }

    private async Task SendPongAsync()
    {
        try
        {
            await inner.WriteAsync(_pongFrame);
            await inner.FlushAsync();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
            // The connection is going; its receive loop sees that on its own.
            owner.Remove(this);
        }
        finally
        {
            Volatile.Write(ref _state, Free);
        }
    }

    private async ValueTask WriteAfterPongAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        do
        {
            // The pong's task may not be published yet (the sweep sets the state first): then let it run.
            if (Volatile.Read(ref _pong) is { IsCompleted: false } pong)
            {
                await pong;
            }
            else
            {
                await Task.Yield();
            }
        }
        while (Interlocked.CompareExchange(ref _state, Frame, Free) == Pong);

        await inner.WriteAsync(buffer, cancellationToken);
    }
}
