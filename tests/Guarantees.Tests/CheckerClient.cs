using System.Buffers;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using OrleansPush.Gateway.Tests;

namespace OrleansPush.Guarantees.Tests;

/// <summary>
/// A raw-WebSocket subscriber of a few topics that behaves badly on purpose, by its own seeded Random: it disconnects
/// at random moments (a clean close or an abort), reconnects to a random gateway and resumes each topic from a random
/// <c>since</c> (where it got to, somewhere earlier, another epoch, or not at all), and may read slowly. After a
/// <c>reset</c> it subscribes again from where it got to. It records every subscription as a <see cref="Segment"/>.
/// </summary>
public sealed class CheckerClient(string name, IReadOnlyList<string> topics, Random random, Func<Random, (string Name, TestGateway Gateway)?> pickGateway, Journal journal, bool disconnects, bool slowReader)
{
    private readonly List<Segment> _segments = [];
    private readonly Dictionary<string, Position> _cursors = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private CancellationTokenSource? _session;
    private volatile bool _settling;
    private int _connections;

    public string Name { get; } = name;

    public IReadOnlyList<string> Topics { get; } = topics;

    public IReadOnlyList<Segment> Segments
    {
        get
        {
            lock (_gate)
            {
                return _segments.ToList();
            }
        }
    }

    /// <summary>From now on: no more disconnects or slow reading; the current connection stays.</summary>
    public void Settle()
    {
        _settling = true;
        lock (_gate)
        {
            try
            {
                _session?.CancelAfter(Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>True when every topic has an open subscription whose answer came.</summary>
    public bool Subscribed
    {
        get
        {
            var open = Segments.Where(s => s.End is null or Segment.Stopped && s.Ok is not null).Select(s => s.Topic).ToHashSet(StringComparer.Ordinal);
            return Topics.All(open.Contains);
        }
    }

    public async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await SessionAsync(stop);
            }
            catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException or JsonException)
            {
            }

            if (!stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(random.Next(20, 300), stop);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
    }

    private async Task SessionAsync(CancellationToken stop)
    {
        if (pickGateway(random) is not var (gatewayName, gateway))
        {
            await Task.Delay(200, stop);
            return;
        }

        var connection = ++_connections;
        using var session = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var lifetime = disconnects && !_settling ? TimeSpan.FromMilliseconds(random.Next(300, 3000)) : Timeout.InfiniteTimeSpan;
        var abort = random.NextDouble() < 0.5;
        var slow = slowReader && !_settling && random.NextDouble() < 0.5;
        using var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("orleanspush.v1.json");
        socket.Options.SetBuffer(4096, 4096);
        using (var connect = CancellationTokenSource.CreateLinkedTokenSource(stop))
        {
            connect.CancelAfter(TimeSpan.FromSeconds(10));
            await socket.ConnectAsync(gateway.WebSocketUri(), connect.Token);
        }

        journal.Add($"client {Name}#{connection} connected to {gatewayName}{(slow ? " (slow reader)" : string.Empty)}");
        lock (_gate)
        {
            _session = session;
        }

        if (!_settling)
        {
            session.CancelAfter(lifetime);
        }

        var open = new Dictionary<string, Segment>(StringComparer.Ordinal);
        var requests = new Dictionary<long, Segment>();
        long nextId = 0;
        var ended = "client";
        try
        {
            foreach (var topic in Topics)
            {
                await SubscribeAsync(topic);
            }

            var buffer = new ArrayBufferWriter<byte>(64 * 1024);
            while (true)
            {
                if (await ReceiveAsync(socket, buffer, session.Token) is not { } frame)
                {
                    ended = "closed by server";
                    break;
                }

                if (await OnFrameAsync(frame) is { } end)
                {
                    ended = end;
                    break;
                }

                if (slow && !_settling && random.NextDouble() < 0.2)
                {
                    await Task.Delay(random.Next(5, 120), session.Token);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or IOException)
        {
            ended = stop.IsCancellationRequested ? Segment.Stopped : session.IsCancellationRequested ? "client" : "connection lost";
        }
        finally
        {
            lock (_gate)
            {
                _session = null;
            }

            foreach (var segment in open.Values)
            {
                segment.Ended(ended);
            }

            journal.Add($"client {Name}#{connection} disconnected: {ended}");
            await CloseAsync(socket, abort || ended != "client");
        }

        async Task SubscribeAsync(string topic)
        {
            var since = ChooseSince(topic);
            var segment = new Segment(Name, topic, connection, since, gatewayName);
            var id = ++nextId;
            lock (_gate)
            {
                _segments.Add(segment);
            }

            open[topic] = segment;
            requests[id] = segment;
            var request = since is { } s
                ? JsonSerializer.Serialize(new { op = "sub", id, topic, since = new { epoch = s.Epoch, seq = s.Seq } })
                : JsonSerializer.Serialize(new { op = "sub", id, topic });
            journal.Add($"client {Name}#{connection} sub {topic} since={(since?.ToString() ?? "-")}");
            await socket.SendAsync(Encoding.UTF8.GetBytes(request), WebSocketMessageType.Text, true, session.Token);
        }

        async Task<string?> OnFrameAsync(Frame frame)
        {
            switch (frame.Op)
            {
                case "msg":
                    var topic = frame.Topic!;
                    var position = new Position(frame.Epoch!, frame.Seq);
                    if (!open.TryGetValue(topic, out var segment))
                    {
                        // Nothing is subscribed: recorded on a segment of its own so the checker sees it.
                        segment = new Segment(Name, topic, connection, null, gatewayName);
                        segment.Ended("unsubscribed");
                        lock (_gate)
                        {
                            _segments.Add(segment);
                        }
                    }

                    segment.Deliver(position, frame.RawData, journal.ElapsedMs);
                    Advance(topic, position);
                    return null;
                case "ok" when frame.Id is { } id && requests.Remove(id, out var answered):
                    var ok = new Position(frame.Epoch!, frame.Seq);
                    answered.Answer(ok, frame.Recovered, journal.ElapsedMs);
                    journal.Add($"client {Name}#{connection} ok {answered.Topic} {ok} recovered={(frame.Recovered?.ToString() ?? "-")}");
                    Advance(answered.Topic, ok, answer: true);
                    return null;
                case "error" when frame.Id is { } id && requests.Remove(id, out var refused):
                    journal.Add($"client {Name}#{connection} sub {refused.Topic} refused: {frame.Code}");
                    refused.Ended("error " + frame.Code);
                    open.Remove(refused.Topic);
                    await Task.Delay(random.Next(50, 300), session.Token);
                    await SubscribeAsync(refused.Topic);
                    return null;
                case "reset":
                    journal.Add($"client {Name}#{connection} reset {frame.Topic} {frame.Code}");
                    if (open.Remove(frame.Topic!, out var reset))
                    {
                        reset.Ended("reset " + frame.Code);
                    }

                    await SubscribeAsync(frame.Topic!);
                    return null;
                case "bye":
                    return "bye " + frame.Code;
                default:
                    return null;
            }
        }
    }

    /// <summary>Where to resume <paramref name="topic"/> from: mostly where the client got to; sometimes earlier, from
    /// another epoch, or not at all (a fresh subscription: nothing before its answer is owed to it). Never later than
    /// where it got to.</summary>
    private Position? ChooseSince(string topic)
    {
        if (!_cursors.TryGetValue(topic, out var cursor))
        {
            return null;
        }

        var r = random.NextDouble();
        return r switch
        {
            < 0.7 => cursor,
            < 0.85 => cursor with { Seq = random.NextInt64(0, cursor.Seq + 1) },
            < 0.93 => new Position("zzzzzzzz", cursor.Seq),
            _ => null,
        };
    }

    /// <summary>Where the client got to on <paramref name="topic"/>: the newest position it received, or a
    /// subscription's answer (the point from which the subscription owes it every message).</summary>
    private void Advance(string topic, Position position, bool answer = false)
    {
        if (!_cursors.TryGetValue(topic, out var cursor) || cursor.Epoch != position.Epoch)
        {
            // An answer in the same epoch as a newer message does not move the client back.
            if (!answer || !_cursors.ContainsKey(topic) || cursor.Epoch != position.Epoch)
            {
                _cursors[topic] = position;
            }

            return;
        }

        if (position.Seq > cursor.Seq)
        {
            _cursors[topic] = position;
        }
    }

    /// <summary>The next frame, or null when the server closed the connection.</summary>
    private static async Task<Frame?> ReceiveAsync(ClientWebSocket socket, ArrayBufferWriter<byte> buffer, CancellationToken cancellationToken)
    {
        buffer.ResetWrittenCount();
        ValueWebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer.GetMemory(4096), cancellationToken);
            buffer.Advance(result.Count);
        }
        while (!result.EndOfMessage);

        return result.MessageType == WebSocketMessageType.Close ? null : Frame.Parse(buffer.WrittenSpan.ToArray());
    }

    private static async Task CloseAsync(ClientWebSocket socket, bool abort)
    {
        if (!abort && socket.State == WebSocketState.Open)
        {
            try
            {
                using var close = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, close.Token);
            }
            catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException)
            {
            }
        }

        socket.Abort();
    }
}
