using System.Text;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway whose <c>big</c> namespace keeps a long history, for catch-up tests: backlogs of
/// several MiB against the default 1 MiB outbound bound. Each test uses topics of its own.</summary>
public sealed class CatchUpFixture : IAsyncLifetime
{
    /// <summary>How long a write may wait for the transport while a catch-up waits before the connection is closed as
    /// slow: the default.</summary>
    public static readonly TimeSpan WriteStallTimeout = Hosting.GatewayOptions.DefaultWriteStallTimeout;

    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:big:HistorySize"] = "20000",
            ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
        });
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

/// <summary>Runs alone: its backlogs are megabytes, which would skew the tests that measure the process's heap, and
/// its slow readers' pace should not depend on what else the machine runs in the same process.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class CatchUpCollection : ICollectionFixture<CatchUpFixture>
{
    public const string Name = "catch-up gateway";
}

/// <summary>A topic's backlog, published straight to its grain (the in-cluster publisher path) with many publishes in
/// flight, so a test starts with megabytes of history quickly.</summary>
public sealed record Backlog(string Topic, string Epoch, IReadOnlyDictionary<long, string> Payloads)
{
    public long Head => Payloads.Count == 0 ? 0 : Payloads.Keys.Max();

    public long Bytes => Payloads.Values.Sum(p => (long)p.Length);

    public static async Task<Backlog> PublishAsync(TestGateway gateway, string topic, int count, int payloadBytes, int from = 1)
    {
        var grain = gateway.Services.GetRequiredService<IClusterClient>().GetGrain<ITopicGrain>(topic);
        var payloads = new Dictionary<long, string>();
        var epoch = string.Empty;
        var padding = new string('x', Math.Max(0, payloadBytes - 24));
        for (var start = from; start < from + count; start += 500)
        {
            var chunk = Enumerable.Range(start, Math.Min(500, from + count - start)).Select(async i =>
            {
                var json = $"{{\"i\":{i},\"p\":\"{padding}\"}}";
                using var timeout = new CancellationTokenSource(WsClient.DefaultWait);
                var position = await grain.PublishAsync(Encoding.UTF8.GetBytes(json), null).WaitAsync(timeout.Token);
                return (position, json);
            }).ToArray();
            foreach (var (position, json) in await Task.WhenAll(chunk))
            {
                payloads[position.Seq] = json;
                epoch = position.Epoch;
            }
        }

        return new Backlog(topic, epoch, payloads);
    }
}

/// <summary>Defect 1 of issue 10: a resume whose backlog is far larger than the connection's outbound bound completes
/// for a client that reads, at a normal pace or slowly but steadily; only a client that stops reading is closed.</summary>
[Collection(CatchUpCollection.Name)]
public sealed class CatchUpTests(CatchUpFixture fixture)
{
    private const int Messages = 6000;
    private const int PayloadBytes = 1100; // 6000 x ~1.1 KB: about 6.6 MB, against the default 1 MiB outbound bound

    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task WebSocketResumeOfSixMegabytesCompletesAndJoinsLiveWithoutGapOrDuplicate()
    {
        var backlog = await Backlog.PublishAsync(Gateway, "big:ws-" + Guid.NewGuid().ToString("N"), Messages, PayloadBytes);
        Assert.True(backlog.Bytes > 5 * 1024 * 1024, $"the backlog is {backlog.Bytes} bytes");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var id = client.NextId();
        await client.SendAsync($"{{\"op\":\"sub\",\"id\":{id},\"topic\":\"{backlog.Topic}\",\"since\":{{\"epoch\":\"{backlog.Epoch}\",\"seq\":0}}}}");

        // Live messages published while the catch-up runs must join at the seam: none lost, none twice.
        var live = Task.Run(() => Backlog.PublishAsync(Gateway, backlog.Topic, 300, 200, from: Messages + 1));
        var sawLast = false;
        var sawOk = false;
        var frames = await ReadUntilAsync(client, f => (sawLast |= f.Op == "msg" && f.Seq >= Messages + 300) & (sawOk |= f.Id == id), TimeSpan.FromSeconds(90));
        var tail = await live;

        AssertComplete(frames, backlog, tail, Messages + 300);
        var ok = frames.Single(f => f.Id == id);
        Assert.Equal("ok", ok.Op);
        Assert.True(ok.Recovered, ok.Raw);
        var replayedAfterOk = frames.SkipWhile(f => f.Id != id).Count(f => f.Op == "msg" && f.Seq <= Messages);
        Assert.True(replayedAfterOk == 0, $"{replayedAfterOk} replayed messages came after the ok: the answer must come after the replay");
    }

    [Fact]
    public async Task WebSocketResumeCompletesForAClientThatReadsSlowlyButSteadily()
    {
        var backlog = await Backlog.PublishAsync(Gateway, "big:wsslow-" + Guid.NewGuid().ToString("N"), Messages, PayloadBytes);
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await client.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{backlog.Topic}\",\"since\":{{\"epoch\":\"{backlog.Epoch}\",\"seq\":0}}}}");

        // About 400 KB/s: 5 frames, then a 10 ms pause. The gateway's queue fills far faster than that.
        var (frames, ended) = await client.DrainSlowlyAsync(framesPerPause: 5, pause: TimeSpan.FromMilliseconds(10),
            stopWhen: f => f.Id == 1, wait: TimeSpan.FromSeconds(120));
        Assert.False(ended, "the slow reader was closed: " + string.Join(" | ", frames.Where(f => f.Op != "msg").Select(f => f.Raw)));
        AssertComplete(frames, backlog, null, Messages);
        Assert.True(frames[^1].Recovered, frames[^1].Raw);
    }

    [Fact]
    public async Task WebSocketClientThatNeverReadsIsStillClosedSlow()
    {
        // Larger than what socket buffers on both ends absorb, so the gateway's writer stalls.
        var backlog = await Backlog.PublishAsync(Gateway, "big:wsstall-" + Guid.NewGuid().ToString("N"), 8000, 2000);
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await client.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{backlog.Topic}\",\"since\":{{\"epoch\":\"{backlog.Epoch}\",\"seq\":0}}}}");
        // Closed within a quarter of the stall timeout after a write waited that long (its writer stalls at once).
        await Task.Delay(CatchUpFixture.WriteStallTimeout * 1.25 + TimeSpan.FromSeconds(4));

        var (frames, ended) = await client.DrainAsync(TimeSpan.FromSeconds(30));
        Assert.True(ended, "a client that does not read must be closed by the server");
        var seqs = frames.Where(f => f.Op == "msg").Select(f => f.Seq).ToList();
        Assert.True(seqs.Count < 8000, $"the stalled client got all {seqs.Count} messages");
        Assert.Equal(Enumerable.Range(1, seqs.Count).Select(i => (long)i), seqs);
        Assert.DoesNotContain(frames, f => f.Id == 1);
    }

    [Fact]
    public async Task SseResumeOfSixMegabytesWithLastEventIdCompletes()
    {
        var backlog = await Backlog.PublishAsync(Gateway, "big:sse-" + Guid.NewGuid().ToString("N"), Messages, PayloadBytes);
        await using var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + backlog.Topic, $"{backlog.Topic}={backlog.Epoch}:0");
        var live = Task.Run(() => Backlog.PublishAsync(Gateway, backlog.Topic, 300, 200, from: Messages + 1));
        var (sawLast, sawSubscribed) = (false, false);
        var events = await ReadSseUntilAsync(stream, e => (sawLast |= e.Event == "message" && e.Seq >= Messages + 300) & (sawSubscribed |= e.Event == "subscribed"),
            TimeSpan.FromSeconds(90), pauseEvery: 0);
        var tail = await live;

        var seqs = events.Where(e => e.Event == "message").Select(e => e.Seq).ToList();
        Assert.Equal(Enumerable.Range(1, Messages + 300).Select(i => (long)i), seqs);
        Assert.All(events.Where(e => e.Event == "message"), e => Assert.Equal(e.Seq <= Messages ? backlog.Payloads[e.Seq] : tail.Payloads[e.Seq], e.RawData));
        var subscribed = events.Single(e => e.Event == "subscribed");
        Assert.True(subscribed.Json.GetProperty("recovered").GetBoolean(), subscribed.Data);
        Assert.DoesNotContain(events, e => e.Event == "bye");
    }

    [Fact]
    public async Task SseResumeCompletesForAClientThatReadsSlowlyButSteadily()
    {
        var backlog = await Backlog.PublishAsync(Gateway, "big:sseslow-" + Guid.NewGuid().ToString("N"), Messages, PayloadBytes);
        await using var stream = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + backlog.Topic, $"{backlog.Topic}={backlog.Epoch}:0");
        var events = await ReadSseUntilAsync(stream, e => e.Event == "subscribed", TimeSpan.FromSeconds(120), pauseEvery: 5);

        Assert.DoesNotContain(events, e => e.Event == "bye");
        var seqs = events.Where(e => e.Event == "message").Select(e => e.Seq).ToList();
        Assert.Equal(Enumerable.Range(1, Messages).Select(i => (long)i), seqs);
        Assert.True(events[^1].Json.GetProperty("recovered").GetBoolean(), events[^1].Data);
    }

    [Theory]
    [InlineData("json")]
    [InlineData("messagepack")]
    public async Task SignalRResumeOfTwoMegabytesCompletes(string protocol)
    {
        var backlog = await Backlog.PublishAsync(Gateway, "big:sr-" + Guid.NewGuid().ToString("N"), 2000, PayloadBytes);
        var builder = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"));
        if (protocol == "messagepack")
        {
            builder.AddMessagePackProtocol();
        }

        var hub = builder.Build();
        await using var _ = hub;
        var seqs = new List<long>();
        if (protocol == "messagepack")
        {
            hub.On<Dictionary<object, object?>>("msg", m => { lock (seqs) { seqs.Add(Convert.ToInt64(m["seq"], System.Globalization.CultureInfo.InvariantCulture)); } });
        }
        else
        {
            hub.On<System.Text.Json.JsonElement>("msg", m => { lock (seqs) { seqs.Add(m.GetProperty("seq").GetInt64()); } });
        }

        var closed = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        hub.Closed += e =>
        {
            closed.TrySetResult(e);
            return Task.CompletedTask;
        };
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await hub.StartAsync(cts.Token);
        var since = new Dictionary<string, object> { ["epoch"] = backlog.Epoch, ["seq"] = 0L };
        var answer = hub.InvokeAsync<object>("Subscribe", backlog.Topic, since, cts.Token);
        if (await Task.WhenAny(answer, closed.Task) != answer)
        {
            Assert.Fail($"the connection was closed after {Count(seqs)} messages: {(await closed.Task)?.Message}");
        }
        await answer;
        while (Count(seqs) < 2000 && !cts.IsCancellationRequested && !closed.Task.IsCompleted)
        {
            await Task.Delay(50);
        }

        lock (seqs)
        {
            Assert.Equal(Enumerable.Range(1, 2000).Select(i => (long)i), seqs);
        }
    }

    [Fact]
    public async Task MqttPersistentSessionResumesTwoMegabytesMissedWhileAway()
    {
        var topic = "big:mq-" + Guid.NewGuid().ToString("N");
        var clientId = "catchup-" + Guid.NewGuid().ToString("N");
        await using (var first = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false))
        {
            await first.SubscribeAsync(topic, MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce);
            await Gateway.PublishAsync(topic, "{\"i\":1}");
            Assert.Equal("{\"i\":1}", (await first.NextAsync()).Payload);
        }

        var backlog = await Backlog.PublishAsync(Gateway, topic, 2000, PayloadBytes, from: 2);
        await using var second = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort, clientId, cleanSession: false);
        await second.SubscribeAsync(topic, MQTTnet.Protocol.MqttQualityOfServiceLevel.AtLeastOnce);
        var payloads = new List<string>();
        while (payloads.Count < 2000 && await second.TryNextAsync(TimeSpan.FromSeconds(20)) is { } next)
        {
            payloads.Add(next.Payload);
        }

        Assert.True(payloads.Count == 2000, $"received {payloads.Count} of 2000; connected: {second.IsConnected}");
        Assert.Equal(Enumerable.Range(2, 2000).Select(seq => backlog.Payloads[seq]), payloads);
    }

    private static int Count(List<long> list)
    {
        lock (list)
        {
            return list.Count;
        }
    }

    /// <summary>Every seq from 1 to <paramref name="head"/> exactly once, in order, each with its published payload.</summary>
    private static void AssertComplete(List<Frame> frames, Backlog backlog, Backlog? tail, long head)
    {
        var messages = frames.Where(f => f.Op == "msg").ToList();
        var bye = frames.FirstOrDefault(f => f.Op is "bye" or "error");
        Assert.True(bye is null, "the connection was closed: " + bye?.Raw);
        Assert.Equal(Enumerable.Range(1, (int)head).Select(i => (long)i), messages.Select(m => m.Seq));
        foreach (var m in messages)
        {
            Assert.Equal(m.Seq <= backlog.Head ? backlog.Payloads[m.Seq] : tail!.Payloads[m.Seq], m.RawData);
        }
    }

    private static async Task<List<Frame>> ReadUntilAsync(WsClient client, Func<Frame, bool> last, TimeSpan wait)
    {
        var frames = new List<Frame>();
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            Frame frame;
            try
            {
                frame = await client.NextAsync(left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1));
            }
            catch (Exception ex) when (ex is OperationCanceledException or System.Threading.Channels.ChannelClosedException)
            {
                Assert.Fail($"after {frames.Count} frames (last {frames.LastOrDefault()?.Raw[..Math.Min(80, frames.LastOrDefault()?.Raw.Length ?? 0)]}): "
                    + (ex is OperationCanceledException ? "timed out" : "the connection closed") + "; frames other than msg: "
                    + string.Join(" | ", frames.Where(f => f.Op != "msg").Select(f => f.Raw)));
                throw;
            }

            frames.Add(frame);
            if (last(frame))
            {
                return frames;
            }
        }
    }

    private static async Task<List<SseEvent>> ReadSseUntilAsync(SseClient stream, Func<SseEvent, bool> last, TimeSpan wait, int pauseEvery)
    {
        var events = new List<SseEvent>();
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            SseEvent e;
            try
            {
                e = await stream.NextAsync(left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1));
            }
            catch (Exception ex) when (ex is OperationCanceledException or EndOfStreamException or IOException or HttpRequestException)
            {
                Assert.Fail($"after {events.Count(x => x.Event == "message")} messages: {ex.GetType().Name}; other events: "
                    + string.Join(" | ", events.Where(x => x.Event != "message").Select(x => x.Event + " " + x.Data)));
                throw;
            }

            if (e.Comment is not null)
            {
                continue;
            }

            events.Add(e);
            if (e.Event == "bye" || last(e))
            {
                return events;
            }

            if (pauseEvery > 0 && events.Count % pauseEvery == 0)
            {
                await Task.Delay(10);
            }
        }
    }
}
