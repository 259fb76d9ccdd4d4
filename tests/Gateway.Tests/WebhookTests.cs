using Microsoft.Extensions.DependencyInjection;
using System.Diagnostics;
using Xunit.Abstractions;

namespace OrleansPush.Gateway.Tests;

/// <summary>Webhooks as a backend receives them: a real HTTP receiver in the test process checks every signature with
/// the configured secret.</summary>
public sealed class WebhookTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(20);

    /// <summary>Subscribe on gateway A, then on B, leave A, leave B: one <c>topic.occupied</c>, one <c>topic.vacated</c>.
    /// The same user connected on both gateways: one <c>user.connected</c>, one <c>user.disconnected</c>.</summary>
    [Fact]
    public async Task FirstAndLastAcrossTwoGatewaysAreOneEventEach()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var settings = TestGateway.Merge(receiver.Settings(), new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:EmptyTopicLinger"] = "00:00:00.500", // the vacated and disconnected events follow it
        });
        await using var silo = await TestSilo.StartAsync(settings);
        await using var a = await TestGateway.StartClientAsync(silo, settings);
        await using var b = await TestGateway.StartClientAsync(silo, settings);
        var topic = GatewayFixture.NewTopic("hooked");
        var user = SecurityFixture.NewUser();

        var onA = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await onA.SubscribeAsync(topic)).Op);
        await receiver.WaitForAsync(e => e.Any(d => d.Type == "topic.occupied" && d.Topic == topic), Within);
        var onB = await WsClient.ConnectAsync(b.WebSocketUri("user=" + user));
        Assert.Equal("ok", (await onB.SubscribeAsync(topic)).Op);
        await onA.DisposeAsync();
        await onB.DisposeAsync();

        var events = await receiver.WaitForAsync(e => e.Any(d => d.Type == "topic.vacated" && d.Topic == topic)
            && e.Any(d => d.Type == "user.disconnected" && d.User == user), Within);
        Assert.Equal(["topic.occupied", "topic.vacated"], events.Where(e => e.Topic == topic).Select(e => e.Type));
        Assert.Equal(["user.connected", "user.disconnected"], events.Where(e => e.User == user && e.Topic is null).Select(e => e.Type));
        Assert.All(events, e => Assert.Equal(e.Id, e.BodyId));
        Assert.Equal(events.Count, events.Select(e => e.Id).Distinct().Count());
        Assert.Equal(0, receiver.BadSignatures);
    }

    [Fact]
    public async Task PresenceJoinAndLeaveAreSent()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var gateway = await TestGateway.StartEmbeddedAsync(Settings(receiver, "presence.join", "presence.leave"));
        var topic = "room:" + Guid.NewGuid().ToString("N");
        var user = SecurityFixture.NewUser();
        await using (var client = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + user)))
        {
            Assert.Equal("ok", (await client.RequestAsync("sub", new { topic, presence = true })).Op);
            await receiver.WaitForAsync(e => e.Any(d => d.Type == "presence.join"), Within);
        }

        var events = await receiver.WaitForAsync(e => e.Any(d => d.Type == "presence.leave"), Within);
        Assert.Equal([("presence.join", topic, user), ("presence.leave", topic, user)], events.Select(e => (e.Type, e.Topic!, e.User!)));
    }

    /// <summary>A client publish becomes a <c>message.published</c> event with the publisher's JSON byte for byte, in
    /// order; prints the delivery latency (publish sent to event received) for the README.</summary>
    [Fact]
    public async Task ClientPublishesArriveInOrderWithTheirData()
    {
        const int Count = 100;
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var gateway = await TestGateway.StartEmbeddedAsync(Settings(receiver, "message.published"));
        var topic = GatewayFixture.NewTopic("chat:hook");
        var user = SecurityFixture.NewUser();
        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri("user=" + user));
        var sent = new long[Count];
        for (var i = 0; i < Count; i++)
        {
            sent[i] = Stopwatch.GetTimestamp();
            Assert.Equal("ok", (await client.RequestAsync("pub", new { topic, data = new { n = i, text = "hello" } })).Op);
            await receiver.WaitForAsync(e => e.Count == i + 1, Within);
        }

        var events = receiver.Acknowledged();
        Assert.Equal(Enumerable.Range(0, Count).Select(i => $"{{\"n\":{i},\"text\":\"hello\"}}"), events.Select(e => e.RawData));
        Assert.All(events, e => Assert.Equal((topic, user), (e.Topic, e.User)));
        var latencies = events.Select((e, i) => Stopwatch.GetElapsedTime(sent[i], e.ReceivedAt).TotalMilliseconds).Order().ToArray();
        output.WriteLine($"webhook delivery, client publish sent to event received, {Count} events: p50 {latencies[Count / 2]:F1} ms, p99 {latencies[Count * 99 / 100]:F1} ms");
    }

    /// <summary>A receiver that answers 500 three times gets the event again each time, then once 200 is answered,
    /// never again.</summary>
    [Fact]
    public async Task AFailingReceiverGetsTheEventAgainUntilItAcknowledgesThenNoMore()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.FailuresPerEvent = 3;
        await using var gateway = await TestGateway.StartEmbeddedAsync(Settings(receiver, "topic.occupied"));
        var topic = GatewayFixture.NewTopic("retried");
        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri());
        Assert.Equal("ok", (await client.SubscribeAsync(topic)).Op);

        var occupied = Assert.Single(await receiver.WaitForAsync(e => e.Count == 1, Within));
        Assert.Equal(("topic.occupied", topic), (occupied.Type, occupied.Topic));
        Assert.Equal(4, receiver.AttemptsOf(occupied.Id));

        // Another event behind it arrives after it (and shows the first is not being sent again meanwhile).
        var second = GatewayFixture.NewTopic("retried");
        Assert.Equal("ok", (await client.SubscribeAsync(second)).Op);
        var events = await receiver.WaitForAsync(e => e.Count == 2, Within);
        Assert.Equal(second, events[1].Topic);
        Assert.Equal(4, receiver.AttemptsOf(occupied.Id));
        Assert.Equal(0, receiver.BadSignatures);
    }

    /// <summary>A receiver down for 10 s loses nothing (the events arrive in order once it is back) and publishing does
    /// not wait for it: publish latency is printed for both phases.</summary>
    [Fact]
    public async Task AReceiverDownForTenSecondsLosesNothingAndPublishingDoesNotWait()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var gateway = await TestGateway.StartEmbeddedAsync(Settings(receiver, "message.published"));
        var topic = GatewayFixture.NewTopic("chat:down");
        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri());

        async Task<double[]> PublishForAsync(int from, TimeSpan duration)
        {
            var latencies = new List<double>();
            var until = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            for (var n = from; Stopwatch.GetTimestamp() < until; n++)
            {
                var start = Stopwatch.GetTimestamp();
                Assert.Equal("ok", (await client.RequestAsync("pub", new { topic, data = n })).Op);
                latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                await Task.Delay(50);
            }

            return [.. latencies.Order()];
        }

        var up = await PublishForAsync(0, TimeSpan.FromSeconds(3));
        await receiver.WaitForAsync(e => e.Count == up.Length, Within);
        await receiver.StopAsync();
        var down = await PublishForAsync(up.Length, TimeSpan.FromSeconds(10));
        await receiver.StartAgainAsync();
        var total = up.Length + down.Length;
        var events = await receiver.WaitForAsync(e => e.Count >= total, TimeSpan.FromSeconds(30));
        Assert.Equal(Enumerable.Range(0, total).Select(n => n.ToString(System.Globalization.CultureInfo.InvariantCulture)), events.Select(e => e.RawData));
        output.WriteLine($"client publish latency with the receiver up ({up.Length}): p50 {up[up.Length / 2]:F1} ms, p99 {up[up.Length * 99 / 100]:F1} ms; "
            + $"down ({down.Length}): p50 {down[down.Length / 2]:F1} ms, p99 {down[down.Length * 99 / 100]:F1} ms");
    }

    /// <summary>Events outlive the silo that stored and was delivering them: with the receiver down, 20 topics are
    /// occupied; the silo hosting most of the endpoint's dispatchers is killed (SIGKILL); once the receiver is back,
    /// every topic's <c>topic.occupied</c> arrives (at least once: a topic grain that moved may announce it again).</summary>
    [Fact]
    public async Task EventsOutliveTheSiloThatWasDeliveringThem()
    {
        const int Topics = 20;
        await using var receiver = await WebhookReceiver.StartAsync();
        await receiver.StopAsync();
        var id = "wh" + Guid.NewGuid().ToString("N")[..8];
        var redis = SiloKillTests.Redis();
        var settings = TestGateway.Merge(TestGateway.Merge(receiver.Settings("backend", "topic.occupied"), SiloKillTests.FastFailoverCluster(id)), new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = redis,
            ["OrleansPush:Storage:Prefix"] = id,
        });
        await using var first = SiloProcess.Start(null, settings);
        await using var second = SiloProcess.Start(null, settings);
        await using var gateway = await SiloKillTests.StartGatewayWhenClusterIsUpAsync(TestGateway.Merge(settings, new Dictionary<string, string?>
        {
            ["OrleansPush:Cluster:Mode"] = "Cluster",
        }));
        await SiloKillTests.WaitForActiveSilosAsync(gateway, first, second);

        // A subscribe is answered after its topic's grain stored the event: all 20 are stored once these are ok.
        var topics = Enumerable.Range(0, Topics).Select(i => GatewayFixture.NewTopic($"survive-{i}")).ToArray();
        await using var subscriber = await WsClient.ConnectAsync(gateway.WebSocketUri());
        foreach (var topic in topics)
        {
            Assert.Equal("ok", (await subscriber.SubscribeAsync(topic)).Op);
        }

        var cluster = gateway.Services.GetRequiredService<IClusterClient>();
        var management = cluster.GetGrain<IManagementGrain>(0);
        var ports = new List<int>();
        for (var shard = 0; shard < 8; shard++)
        {
            var address = await management.GetActivationAddress(cluster.GetGrain<IWebhookDispatcherGrain>(WebhookOptionsKey(shard)));
            ports.Add(address?.Endpoint.Port ?? 0);
        }

        var victim = ports.Count(p => p == second.SiloPort) >= ports.Count(p => p == first.SiloPort) ? second : first;
        output.WriteLine($"dispatchers per silo port: {string.Join(", ", ports.GroupBy(p => p).Select(g => $"{g.Key}: {g.Count()}"))}; killing {victim.SiloPort}");
        victim.Kill();
        await receiver.StartAgainAsync();

        var events = await receiver.WaitForAsync(e => topics.All(t => e.Any(d => d.Topic == t)), TimeSpan.FromSeconds(60));
        Assert.All(events, e => Assert.Equal("topic.occupied", e.Type));
        Assert.Equal(0, receiver.BadSignatures);
    }

    private static string WebhookOptionsKey(int shard) => OrleansPush.Hosting.Webhooks.WebhookOptions.DispatcherKey("backend", shard);

    private static Dictionary<string, string?> Settings(WebhookReceiver receiver, params string[] events) =>
        TestGateway.Merge(receiver.Settings("backend", events), new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:room:Presence"] = "true",
            ["OrleansPush:Gateway:EmptyTopicLinger"] = "00:00:00.500",
        });
}
