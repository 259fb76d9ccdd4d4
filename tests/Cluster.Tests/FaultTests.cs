using Xunit.Abstractions;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace OrleansPush.Cluster.Tests;

/// <summary>
/// Faults on a real cluster (<see cref="LocalCluster"/>: Redis, two silo processes, two gateway processes), seen
/// through the .NET client library: subscribers on both gateways, a backend publishing with idempotency keys.
/// </summary>
public sealed class FaultTests(ITestOutputHelper output)
{
    [Fact]
    public async Task KillingASiloWhilePublishingTo100TopicsLosesNothingAndPublishingResumesWithin10Seconds()
    {
        // How soon a dead silo is declared dead bounds how soon its grains answer again. Orleans adapts each probe's
        // timeout to observed response times (up to 4 x ProbeTimeout) and stretches it further while a silo sees its
        // own health degrade, as it does on a loaded 2-core machine; a deployment that wants failover within seconds
        // caps both, and gives each publish attempt less time before it is retried.
        await using var cluster = await LocalCluster.StartAsync(new Dictionary<string, string>
        {
            ["OrleansPush:Cluster:Membership:MaxProbeTimeout"] = "00:00:02",
            ["OrleansPush:Cluster:Membership:ExtendProbeTimeoutDuringDegradation"] = "false",
            ["OrleansPush:Gateway:PublishAttemptTimeout"] = "00:00:02",
        });
        var topics = Topics("silo", 100);
        await using var onFirst = await Subscriber.StartAsync("subscriber@gateway-0", [cluster.GatewayWebSocket(0), cluster.GatewayWebSocket(1)], topics);
        await using var onSecond = await Subscriber.StartAsync("subscriber@gateway-1", [cluster.GatewayWebSocket(1), cluster.GatewayWebSocket(0)], topics);
        var publisher = new PublishLoop([cluster.GatewayHttp(0), cluster.GatewayHttp(1)], topics);

        await publisher.RunAsync(3, CancellationToken.None);
        var killedAt = DateTime.UtcNow;
        cluster.KillSilo(1);
        await publisher.RunAsync(10, CancellationToken.None);

        // How long each topic went without an acknowledged publish after the kill (its grain may have lived there).
        var firstAfter = publisher.FirstAcknowledgedAfter(killedAt);
        Assert.Equal(topics.Count, firstAfter.Count);
        var resume = firstAfter.Values.Max() - killedAt;
        var outages = firstAfter.Values.Select(t => (t - killedAt).TotalSeconds).Order().ToArray();
        var distribution = $"per-topic time to the first acknowledged publish after the kill: p50 {outages[outages.Length / 2]:F1} s, p90 {outages[outages.Length * 9 / 10]:F1} s, max {outages[^1]:F1} s; over 5 s: {outages.Count(o => o > 5)} topics";
        output.WriteLine(distribution);

        var (messages, pairs) = await VerifyAsync(publisher, [onFirst, onSecond], topics);
        output.WriteLine($"silo SIGKILL: every topic published again within {resume.TotalSeconds:F1} s (longest publish {publisher.LongestPublish.TotalSeconds:F1} s); {messages} messages acknowledged on {topics.Count} topics, " +
            $"{pairs} subscriber-topic sequences complete and in order (0 lost, 0 duplicates)");
        Assert.True(resume < TimeSpan.FromSeconds(10), $"publishing resumed only after {resume.TotalSeconds:F1} s; {distribution}\n{cluster.Logs()}");
    }

    [Fact]
    public async Task KillingAGatewayMovesItsClientsToTheOtherWithNothingLost()
    {
        await using var cluster = await LocalCluster.StartAsync();
        var topics = Topics("gw", 30);
        var urls = new[] { cluster.GatewayWebSocket(1), cluster.GatewayWebSocket(0) };
        await using var subscribers = new SubscriberGroup();
        for (var i = 0; i < 4; i++)
        {
            subscribers.Add(await Subscriber.StartAsync($"subscriber-{i}@gateway-1", urls, topics));
        }

        // The backend publishes through the gateway that stays up.
        var publisher = new PublishLoop([cluster.GatewayHttp(0)], topics);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var publishing = publisher.RunAsync(400, stop.Token);
        await WaitForRoundsAsync(publisher, 5);
        cluster.KillGateway(1);
        await WaitUntilAsync(() => subscribers.All(s => s.Reconnects.Count > 0 && s.Client.CurrentUrl == cluster.GatewayWebSocket(0)), TimeSpan.FromSeconds(30), "the clients did not move to gateway-0");
        var rounds = publisher.Rounds;
        await WaitForRoundsAsync(publisher, rounds + 5);
        await stop.CancelAsync();
        await publishing;

        var (messages, pairs) = await VerifyAsync(publisher, subscribers, topics);
        output.WriteLine($"gateway SIGKILL: {Check.Percentiles(subscribers.SelectMany(s => s.Reconnects))} (from losing the connection to being connected to the other gateway); " +
            $"{messages} messages on {topics.Count} topics, {pairs} subscriber-topic sequences complete and in order");
    }

    [Fact]
    public async Task RollingRestartOfBothGatewaysAndBothSilosUnderSteadyPublishingLosesNothing()
    {
        await using var cluster = await LocalCluster.StartAsync();
        var topics = Topics("roll", 30);
        await using var subscribers = new SubscriberGroup();
        for (var i = 0; i < 6; i++)
        {
            var home = i % 2;
            subscribers.Add(await Subscriber.StartAsync($"subscriber-{i}@gateway-{home}", [cluster.GatewayWebSocket(home), cluster.GatewayWebSocket(1 - home)], topics));
        }

        var publisher = new PublishLoop([cluster.GatewayHttp(0), cluster.GatewayHttp(1)], topics);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var publishing = publisher.RunAsync(5000, stop.Token);
        await WaitForRoundsAsync(publisher, 3);

        var steps = new List<string>();
        async Task StepAsync(string what, Func<Task> stopNode, Func<Task> startNode)
        {
            var started = DateTime.UtcNow;
            await stopNode();
            await startNode();
            var rounds = publisher.Rounds;
            await WaitForRoundsAsync(publisher, rounds + 3);
            steps.Add($"{what} {(DateTime.UtcNow - started).TotalSeconds:F1} s");
        }

        await StepAsync("gateway-0", () => cluster.StopGatewayAsync(0), () => cluster.StartGatewayAsync(0));
        await StepAsync("gateway-1", () => cluster.StopGatewayAsync(1), () => cluster.StartGatewayAsync(1));
        await StepAsync("silo-0", () => cluster.StopSiloAsync(0), () => cluster.StartSiloAsync(0));
        await StepAsync("silo-1", () => cluster.StopSiloAsync(1), () => cluster.StartSiloAsync(1));
        await stop.CancelAsync();
        await publishing;

        var (messages, pairs) = await VerifyAsync(publisher, subscribers, topics);
        var reconnects = subscribers.SelectMany(s => s.Reconnects).ToArray();
        output.WriteLine($"rolling restart ({string.Join(", ", steps)}): {Check.Percentiles(reconnects)}; " +
            $"{messages} messages on {topics.Count} topics in {publisher.Rounds} rounds, {pairs} subscriber-topic sequences complete and in order");
        Assert.True(reconnects.Length >= subscribers.Count, "every client should have been moved at least once by the gateway restarts");
    }

    [Fact]
    public async Task RestartingRedisWhilePublishingLosesNothingAcknowledgedAndTheClusterRecoversByItself()
    {
        await using var cluster = await LocalCluster.StartAsync();
        var topics = Topics("redis", 20);
        await using var onFirst = await Subscriber.StartAsync("subscriber@gateway-0", [cluster.GatewayWebSocket(0), cluster.GatewayWebSocket(1)], topics);
        await using var onSecond = await Subscriber.StartAsync("subscriber@gateway-1", [cluster.GatewayWebSocket(1), cluster.GatewayWebSocket(0)], topics);
        var publisher = new PublishLoop([cluster.GatewayHttp(0), cluster.GatewayHttp(1)], topics) { GiveUpOnUnavailable = true };
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var publishing = publisher.RunAsync(5000, stop.Token);
        await WaitForRoundsAsync(publisher, 5);

        await cluster.Redis.StopAsync();
        var down = DateTime.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(4));
        await cluster.Redis.StartAsync();
        var up = DateTime.UtcNow;

        // Recovered by itself: every topic is acknowledged again, with nobody restarting anything.
        await WaitUntilAsync(() => publisher.FirstAcknowledgedAfter(up.AddSeconds(1)).Count == topics.Count, TimeSpan.FromSeconds(60),
            "publishing did not recover within 60 s of Redis coming back");
        var recovered = publisher.FirstAcknowledgedAfter(up.AddSeconds(1)).Values.Max() - up;
        var rounds = publisher.Rounds;
        await WaitForRoundsAsync(publisher, rounds + 3);
        await stop.CancelAsync();
        await publishing;

        var (messages, pairs) = await VerifyAsync(publisher, [onFirst, onSecond], topics);
        output.WriteLine($"redis restart (down {(up - down).TotalSeconds:F1} s): {publisher.Refusals.Count} publishes refused with 'unavailable', none with another error; " +
            $"every topic acknowledged again {recovered.TotalSeconds:F1} s after Redis was back, the longest publish took {publisher.LongestPublish.TotalSeconds:F1} s; {messages} acknowledged messages, {pairs} subscriber-topic sequences complete and in order");
    }

    /// <summary>Lets every subscriber catch up with what was acknowledged, then checks each sequence.</summary>
    private static async Task<(long Messages, int Pairs)> VerifyAsync(PublishLoop publisher, IReadOnlyList<Subscriber> subscribers, IReadOnlyList<string> topics)
    {
        var heads = publisher.Heads();
        foreach (var subscriber in subscribers)
        {
            await subscriber.WaitForAsync(heads, TimeSpan.FromSeconds(30));
        }

        Assert.Empty(publisher.Unexpected);
        return (heads.Values.Sum(), Check.CompleteAndInOrder(subscribers, publisher, topics));
    }

    private static List<string> Topics(string name, int count)
    {
        var run = Guid.NewGuid().ToString("N")[..6];
        return [.. Enumerable.Range(0, count).Select(i => $"{name}-{run}-{i}")];
    }

    private static Task WaitForRoundsAsync(PublishLoop publisher, int rounds) =>
        WaitUntilAsync(() => publisher.Rounds >= rounds, TimeSpan.FromSeconds(120), $"publishing did not reach round {rounds}");

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string failure)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure);
            await Task.Delay(100);
        }
    }
}
