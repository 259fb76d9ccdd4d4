using System.Collections.Concurrent;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;

namespace OrleansPush.Bench;

/// <summary>
/// The <c>limit</c> comparator: one Kestrel process, no cluster, no history, no auth. It speaks the same <c>sub</c> /
/// <c>msg</c> frames and <c>POST /api/topics/{topic}</c> as a gateway and does the least work a broadcaster can: the
/// <c>msg</c> frame is built once per publish and the same array is queued to every subscriber; each connection has
/// one writer loop that drains its queue.
/// </summary>
internal static class LimitServer
{
    private const string Epoch = "limit";

    public static async Task<int> RunAsync(int port)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
        var app = builder.Build();
        var topics = new ConcurrentDictionary<string, Topic>(StringComparer.Ordinal);

        app.UseWebSockets(new WebSocketOptions { KeepAliveInterval = TimeSpan.Zero });
        app.MapGet("/healthz", () => Results.Ok());
        app.Map("/ws", async context =>
        {
            if (!context.WebSockets.IsWebSocketRequest)
            {
                context.Response.StatusCode = 400;
                return;
            }

            using var socket = await context.WebSockets.AcceptWebSocketAsync(Wire.SubProtocol);
            await new Connection(socket).RunAsync(topics, context.RequestAborted);
        });
        app.MapPost("/api/topics/{**topic}", async (string topic, HttpRequest request) =>
        {
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body);
            var t = topics.GetOrAdd(topic, static name => new Topic(name));
            var seq = t.Publish(body.GetBuffer().AsSpan(0, (int)body.Length));
            return Results.Text($"{{\"topic\":\"{topic}\",\"epoch\":\"{Epoch}\",\"seq\":{seq}}}", "application/json");
        });
        await app.RunAsync();
        return 0;
    }

    private sealed class Topic(string name)
    {
        private readonly Lock _lock = new();
        private readonly byte[] _prefix = Encoding.UTF8.GetBytes($"{{\"op\":\"msg\",\"topic\":\"{name}\",\"epoch\":\"{Epoch}\",\"seq\":");
        private Connection[] _subscribers = [];
        private long _seq;

        /// <summary>The ok carries the position under the same lock as publishing, so no message falls between.</summary>
        public void Subscribe(Connection c, long id)
        {
            lock (_lock)
            {
                c.Enqueue(Encoding.UTF8.GetBytes($"{{\"op\":\"ok\",\"id\":{id},\"epoch\":\"{Epoch}\",\"seq\":{_seq}}}"));
                _subscribers = [.. _subscribers, c];
            }
        }

        public void Remove(Connection c)
        {
            lock (_lock)
            {
                _subscribers = Array.FindAll(_subscribers, x => x != c);
            }
        }

        /// <summary>Sequencing and enqueueing under one lock keeps every subscriber's queue in seq order.</summary>
        public long Publish(ReadOnlySpan<byte> data)
        {
            lock (_lock)
            {
                var seq = ++_seq;
                Span<byte> digits = stackalloc byte[20];
                seq.TryFormat(digits, out var n);
                var frame = new byte[_prefix.Length + n + 8 + data.Length + 1];
                _prefix.CopyTo(frame, 0);
                digits[..n].CopyTo(frame.AsSpan(_prefix.Length));
                ",\"data\":"u8.CopyTo(frame.AsSpan(_prefix.Length + n));
                data.CopyTo(frame.AsSpan(_prefix.Length + n + 8));
                frame[^1] = (byte)'}';
                foreach (var s in _subscribers)
                {
                    s.Enqueue(frame);
                }

                return seq;
            }
        }
    }

    private sealed class Connection(WebSocket socket)
    {
        private const int MaxQueued = 16_384;
        private readonly Channel<byte[]> _queue = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true });
        private readonly List<Topic> _topics = [];
        private int _queued;

        public void Enqueue(byte[] frame)
        {
            if (Interlocked.Increment(ref _queued) > MaxQueued)
            {
                socket.Abort(); // a slow client must not hold the others' memory
                return;
            }

            _queue.Writer.TryWrite(frame);
        }

        public async Task RunAsync(ConcurrentDictionary<string, Topic> topics, CancellationToken aborted)
        {
            var writer = WriteLoopAsync(aborted);
            var buffer = new byte[4096];
            try
            {
                while (true)
                {
                    var result = await socket.ReceiveAsync(buffer.AsMemory(), aborted);
                    if (result.MessageType == WebSocketMessageType.Close || !result.EndOfMessage)
                    {
                        break;
                    }

                    OnFrame(buffer.AsSpan(0, result.Count), topics);
                }
            }
            catch (Exception e) when (e is WebSocketException or OperationCanceledException or JsonException)
            {
                // the client went away: nothing to report
            }
            finally
            {
                foreach (var t in _topics)
                {
                    t.Remove(this);
                }

                _queue.Writer.TryComplete();
                socket.Abort();
                await writer;
            }
        }

        private void OnFrame(ReadOnlySpan<byte> frame, ConcurrentDictionary<string, Topic> topics)
        {
            var reader = new Utf8JsonReader(frame);
            string? op = null, topic = null;
            long id = 0;
            while (reader.Read())
            {
                if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
                {
                    continue;
                }

                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case "op": op = reader.GetString(); break;
                    case "topic": topic = reader.GetString(); break;
                    case "id": id = reader.GetInt64(); break;
                    default: reader.Skip(); break;
                }
            }

            if (op == "sub" && topic is not null)
            {
                var t = topics.GetOrAdd(topic, static name => new Topic(name));
                _topics.Add(t); // only the receive loop touches _topics
                t.Subscribe(this, id);
            }
            else
            {
                Enqueue(Encoding.UTF8.GetBytes($"{{\"op\":\"error\",\"id\":{id},\"code\":\"bad_request\",\"message\":\"limit knows only sub\"}}"));
            }
        }

        private async Task WriteLoopAsync(CancellationToken aborted)
        {
            var reader = _queue.Reader;
            try
            {
                while (await reader.WaitToReadAsync(aborted))
                {
                    while (reader.TryRead(out var frame))
                    {
                        Interlocked.Decrement(ref _queued);
                        await socket.SendAsync(frame.AsMemory(), WebSocketMessageType.Text, WebSocketMessageFlags.EndOfMessage, aborted);
                    }
                }
            }
            catch (Exception e) when (e is WebSocketException or OperationCanceledException or ObjectDisposedException or IOException)
            {
                socket.Abort();
            }
        }
    }
}
