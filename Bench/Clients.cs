using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text.Json;
using MQTTnet;
using MQTTnet.Packets;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;

namespace OrleansPush.Bench;

/// <summary>What every subscriber of one run reports into: deliveries, gaps, and the latency histogram.</summary>
internal sealed class LoadStats
{
    private const int BucketMicros = 10;
    private const int Buckets = 1_000_000; // 10 s at 10 µs
    private readonly int[] _histogram = new int[Buckets + 1];
    private long _max;
    private long _windowStart = long.MaxValue;
    private long _windowEnd = long.MaxValue;

    public long Delivered;

    /// <summary>Bytes of the message frames received (raw WebSocket only): what the wire carried.</summary>
    public long WireBytes;
    public long Gaps;
    public long OutOfOrder;

    /// <summary>Only messages sent inside the window count towards latency.</summary>
    public void OpenWindow() => Volatile.Write(ref _windowStart, Stopwatch.GetTimestamp());

    public void CloseWindow() => Volatile.Write(ref _windowEnd, Stopwatch.GetTimestamp());

    public void OnMessage(long sentAt)
    {
        Interlocked.Increment(ref Delivered);
        if (sentAt < Volatile.Read(ref _windowStart) || sentAt > Volatile.Read(ref _windowEnd))
        {
            return;
        }

        var micros = (long)Wire.MicrosSince(sentAt);
        Interlocked.Increment(ref _histogram[Math.Clamp(micros / BucketMicros, 0, Buckets)]);
        var max = Volatile.Read(ref _max);
        while (micros > max)
        {
            var seen = Interlocked.CompareExchange(ref _max, micros, max);
            if (seen == max)
            {
                break;
            }

            max = seen;
        }
    }

    public long LatencyCount => _histogram.Sum(x => (long)x);

    public double MaxMillis => Volatile.Read(ref _max) / 1000.0;

    public double PercentileMillis(double p)
    {
        var total = LatencyCount;
        if (total == 0)
        {
            return double.NaN;
        }

        var rank = (long)Math.Ceiling(total * p);
        long seen = 0;
        for (var i = 0; i < _histogram.Length; i++)
        {
            seen += _histogram[i];
            if (seen >= rank)
            {
                return (i + 1) * BucketMicros / 1000.0;
            }
        }

        return MaxMillis;
    }

    public void OnSeq(ref long last, long seq)
    {
        if (last > 0 && seq != last + 1)
        {
            if (seq > last + 1)
            {
                Interlocked.Add(ref Gaps, seq - last - 1);
            }
            else
            {
                Interlocked.Increment(ref OutOfOrder);
            }
        }

        if (seq > last)
        {
            last = seq;
        }
    }
}

/// <summary>One subscribed client connection, whatever its transport.</summary>
internal interface ISubscriber : IAsyncDisposable
{
    long LastSeq { get; }

    string? Epoch { get; }

    /// <summary>Connects, subscribes and waits for the answer; with a <paramref name="sinceEpoch"/> it resumes and the
    /// result says whether the server reported <c>recovered:true</c>.</summary>
    Task<bool> ConnectAsync(string endpoint, string topic, string? sinceEpoch, long sinceSeq, CancellationToken cancellationToken);

    /// <summary>Drops the connection without a close handshake, like a client that lost its network.</summary>
    void Abort();
}

/// <summary>A raw <c>/ws</c> client. Frames are read with span searches, not a JSON parser.</summary>
/// <param name="delta">Subscribes with <c>"delta":"fossil"</c>; the frames are counted, not rebuilt.</param>
internal sealed class RawSubscriber(LoadStats stats, HttpMessageInvoker invoker, bool delta = false) : ISubscriber
{
    private readonly ClientWebSocket _socket = new();
    private readonly TaskCompletionSource<bool> _ok = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastSeq;
    private Task _receiving = Task.CompletedTask;

    public long LastSeq => Volatile.Read(ref _lastSeq);

    public string? Epoch { get; private set; }

    public async Task<bool> ConnectAsync(string endpoint, string topic, string? sinceEpoch, long sinceSeq, CancellationToken cancellationToken)
    {
        _socket.Options.AddSubProtocol(Wire.SubProtocol);
        _socket.Options.KeepAliveInterval = TimeSpan.Zero;
        _lastSeq = sinceSeq;
        await _socket.ConnectAsync(new Uri(endpoint.Replace("http://", "ws://") + "/ws"), invoker, cancellationToken);
        _receiving = ReceiveLoopAsync();
        await _socket.SendAsync(Wire.Sub(1, topic, sinceEpoch, sinceSeq, delta), WebSocketMessageType.Text, true, cancellationToken);
        return await _ok.Task.WaitAsync(cancellationToken);
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = new byte[1024];
        try
        {
            while (true)
            {
                var count = 0;
                ValueWebSocketReceiveResult result;
                do
                {
                    if (count == buffer.Length)
                    {
                        Array.Resize(ref buffer, buffer.Length * 2);
                    }

                    result = await _socket.ReceiveAsync(buffer.AsMemory(count), CancellationToken.None);
                    count += result.Count;
                }
                while (!result.EndOfMessage);

                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }

                OnFrame(buffer.AsSpan(0, count));
            }
        }
        catch (Exception e) when (e is WebSocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            // aborted by us or by the server
        }

        _ok.TrySetResult(false);
    }

    private void OnFrame(ReadOnlySpan<byte> frame)
    {
        if (Wire.IsMsg(frame))
        {
            Interlocked.Add(ref stats.WireBytes, frame.Length);
            stats.OnSeq(ref _lastSeq, Wire.Seq(frame));
            stats.OnMessage(Wire.SentAt(frame));
        }
        else if (Wire.IsOk(frame))
        {
            var seq = Wire.Seq(frame);
            if (seq >= 0)
            {
                Volatile.Write(ref _lastSeq, seq);
            }

            Epoch ??= Wire.Epoch(frame);
            _ok.TrySetResult(Wire.IsRecovered(frame));
        }
        else
        {
            _ok.TrySetException(new InvalidOperationException("server answered " + System.Text.Encoding.UTF8.GetString(frame)));
        }
    }

    public void Abort() => _socket.Abort();

    public async ValueTask DisposeAsync()
    {
        _socket.Abort();
        await _receiving;
        _socket.Dispose();
    }
}

/// <summary>A SignalR .NET client on the WebSockets transport, negotiation skipped.</summary>
internal sealed class SignalRSubscriber(LoadStats stats) : ISubscriber
{
    private HubConnection? _connection;
    private long _lastSeq;

    public long LastSeq => Volatile.Read(ref _lastSeq);

    public string? Epoch { get; private set; }

    public async Task<bool> ConnectAsync(string endpoint, string topic, string? sinceEpoch, long sinceSeq, CancellationToken cancellationToken)
    {
        _connection = new HubConnectionBuilder()
            .WithUrl(endpoint + SignalRServer.HubPath, HttpTransportType.WebSockets, o => o.SkipNegotiation = true)
            .Build();
        _connection.On<JsonElement>("msg", m =>
        {
            stats.OnSeq(ref _lastSeq, m.GetProperty("seq").GetInt64());
            stats.OnMessage(m.GetProperty("data").GetProperty("t").GetInt64());
        });
        await _connection.StartAsync(cancellationToken);
        var ok = await _connection.InvokeAsync<JsonElement>("Subscribe", topic, null, cancellationToken);
        Epoch = ok.GetProperty("epoch").GetString();
        return false;
    }

    public void Abort()
    {
        _ = _connection?.DisposeAsync().AsTask();
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}

/// <summary>An MQTT 5 client (MQTTnet) over the gateway's MQTT WebSocket endpoint (<c>/mqtt</c>), subscribed at QoS 0.
/// The position comes from the <c>seq</c> user property; the payload is the published bytes.</summary>
internal sealed class MqttSubscriber(LoadStats stats) : ISubscriber
{
    private readonly IMqttClient _client = new MqttClientFactory().CreateMqttClient();
    private long _lastSeq;

    public long LastSeq => Volatile.Read(ref _lastSeq);

    public string? Epoch { get; private set; }

    public async Task<bool> ConnectAsync(string endpoint, string topic, string? sinceEpoch, long sinceSeq, CancellationToken cancellationToken)
    {
        _lastSeq = sinceSeq;
        _client.ApplicationMessageReceivedAsync += e =>
        {
            var message = e.ApplicationMessage;
            var payload = message.Payload.IsSingleSegment ? message.Payload.FirstSpan : message.Payload.ToArray();
            Interlocked.Add(ref stats.WireBytes, payload.Length);
            foreach (var property in message.UserProperties ?? [])
            {
                if (property.Name == "seq")
                {
                    stats.OnSeq(ref _lastSeq, long.Parse(property.ReadValueAsString(), System.Globalization.CultureInfo.InvariantCulture));
                }
                else if (property.Name == "epoch")
                {
                    Epoch ??= property.ReadValueAsString();
                }
            }

            stats.OnMessage(Wire.SentAt(payload));
            return Task.CompletedTask;
        };
        var options = new MqttClientOptionsBuilder()
            .WithWebSocketServer(o => o.WithUri(endpoint.Replace("http://", "ws://", StringComparison.Ordinal) + "/mqtt"))
            .WithProtocolVersion(MQTTnet.Formatter.MqttProtocolVersion.V500)
            .WithClientId("bench-" + Guid.NewGuid().ToString("N"))
            .WithCleanSession()
            .WithKeepAlivePeriod(TimeSpan.FromMinutes(5))
            .Build();
        await _client.ConnectAsync(options, cancellationToken);
        await _client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(topic, MQTTnet.Protocol.MqttQualityOfServiceLevel.AtMostOnce).Build(), cancellationToken);
        return false;
    }

    public void Abort() => _client.Dispose();

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_client.IsConnected)
            {
                using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await _client.DisconnectAsync(new MqttClientDisconnectOptions(), bounded.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or MQTTnet.Exceptions.MqttCommunicationException)
        {
            // gone already
        }

        _client.Dispose();
    }
}

/// <summary>Opens many connections: spread round-robin over the system's endpoints and, past what one loopback source
/// address can hold, over 127.0.0.2, 127.0.0.3, …</summary>
internal static class Loader
{
    public const int ConnectionsPerSourceAddress = 25_000;
    private static readonly Dictionary<int, HttpMessageInvoker> _invokers = [];

    /// <summary>One invoker per source address; the socket binds the address with IP_BIND_ADDRESS_NO_PORT so the
    /// kernel picks the port at connect time (per destination), not at bind time.</summary>
    public static HttpMessageInvoker Invoker(int sourceIndex)
    {
        lock (_invokers)
        {
            if (!_invokers.TryGetValue(sourceIndex, out var invoker))
            {
                var source = sourceIndex == 0 ? null : new IPAddress([127, 0, 0, (byte)(1 + sourceIndex)]);
                var handler = new SocketsHttpHandler
                {
                    ConnectCallback = async (context, ct) =>
                    {
                        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                        try
                        {
                            if (source is not null)
                            {
                                const int solIp = 0, ipBindAddressNoPort = 24;
                                socket.SetRawSocketOption(solIp, ipBindAddressNoPort, BitConverter.GetBytes(1));
                                socket.Bind(new IPEndPoint(source, 0));
                            }

                            await socket.ConnectAsync(context.DnsEndPoint, ct);
                            return new NetworkStream(socket, ownsSocket: true);
                        }
                        catch
                        {
                            socket.Dispose();
                            throw;
                        }
                    },
                };
                invoker = new HttpMessageInvoker(handler);
                _invokers[sourceIndex] = invoker;
            }

            return invoker;
        }
    }

    public static ISubscriber Create(ClientKind kind, LoadStats stats, int index, bool delta = false) => kind switch
    {
        ClientKind.SignalR => new SignalRSubscriber(stats),
        ClientKind.Mqtt => new MqttSubscriber(stats),
        _ => new RawSubscriber(stats, Invoker(index / ConnectionsPerSourceAddress), delta),
    };

    /// <summary>Connects <paramref name="count"/> subscribers; <paramref name="topicOf"/> names each one's topic.
    /// Bounded: each connection gets 30 s, the whole call <paramref name="timeout"/>; failures are counted, not thrown.</summary>
    public static async Task<(ISubscriber?[] Subscribers, int Connected, int Recovered)> ConnectAsync(
        SystemUnderTest sut, LoadStats stats, int count, Func<int, string> topicOf, TimeSpan timeout, int parallelism = 64,
        Func<int, (string Epoch, long Seq)?>? since = null, bool delta = false, ClientKind? kind = null)
    {
        var subscribers = new ISubscriber?[count];
        var failed = 0;
        var recovered = 0;
        using var overall = new CancellationTokenSource(timeout);
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, count), new ParallelOptions { MaxDegreeOfParallelism = parallelism, CancellationToken = overall.Token }, async (i, ct) =>
            {
                var subscriber = Create(kind ?? sut.Kind, stats, i, delta);
                using var one = CancellationTokenSource.CreateLinkedTokenSource(ct);
                one.CancelAfter(TimeSpan.FromSeconds(30));
                try
                {
                    var position = since?.Invoke(i);
                    if (await subscriber.ConnectAsync(sut.Endpoints[i % sut.Endpoints.Count], topicOf(i), position?.Epoch, position?.Seq ?? 0, one.Token))
                    {
                        Interlocked.Increment(ref recovered);
                    }

                    subscribers[i] = subscriber;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    if (Interlocked.Increment(ref failed) <= 3)
                    {
                        Console.WriteLine($"    connect {i} failed: {e.GetType().Name}: {e.Message}");
                    }

                    await subscriber.DisposeAsync();
                }
            });
        }
        catch (OperationCanceledException)
        {
            Console.WriteLine($"    connecting stopped after {timeout.TotalSeconds:0} s");
        }

        return (subscribers, subscribers.Count(s => s is not null), recovered);
    }

    public static async Task CloseAllAsync(IEnumerable<ISubscriber?> all)
    {
        var subscribers = all.Where(s => s is not null).Select(s => s!).ToList();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await Parallel.ForEachAsync(subscribers, new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = timeout.Token },
                async (s, _) => await s.DisposeAsync());
        }
        catch (OperationCanceledException)
        {
            Console.WriteLine("    closing clients took over 30 s; moving on");
        }
    }
}
