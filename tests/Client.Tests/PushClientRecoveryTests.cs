using System.Text;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Tests;
using StackExchange.Redis;

namespace OrleansPush.Client.Tests;

/// <summary>The .NET client against the gateway's answers to adversarial faults (issue 10): a <c>reset</c> (a gap
/// history cannot fill) and an epoch change are reported as failed recoveries, and delivery goes on.</summary>
public sealed class PushClientRecoveryTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ResetSubscriptionIsTakenUpAgainWithSinceAndReported()
    {
        var faults = new StreamFaults();
        await using var gateway = await TestGateway.StartEmbeddedAsync(
            new Dictionary<string, string?> { ["OrleansPush:Topics:Namespaces:tiny:HistorySize"] = "3" },
            StreamFaults.Register(faults));
        var topic = "tiny:" + Guid.NewGuid().ToString("N");
        var received = new List<long>();
        var failures = new List<RecoveryFailure>();
        await using var client = new PushClient(new PushClientOptions { Url = gateway.WebSocketUri() });
        client.RecoveryFailed += f => { lock (failures) { failures.Add(f); } };
        using var started = new CancellationTokenSource(Wait);
        await client.StartAsync(started.Token);
        await client.SubscribeAsync(topic, m => { lock (received) { received.Add(m.Seq); } }, started.Token);

        var first = await gateway.PublishAsync(topic, "1");
        await PushClientTests.Until(() => PushClientTests.Count(received) >= 1, "the first message");
        faults.Lose(topic, seq => seq is >= 2 and <= 5); // never reach the gateway; history keeps 3
        for (var i = 2; i <= 8; i++)
        {
            await gateway.PublishAsync(topic, i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        await PushClientTests.Until(() => PushClientTests.Count(failures) >= 1, "the gap reported");
        await gateway.PublishAsync(topic, "9");
        await PushClientTests.Until(() => PushClientTests.LastOf(received) == 9, "the messages after the reset");
        await Task.Delay(300);
        lock (received)
        {
            // 2 and 3 are gone for good (history keeps 3 when 6 comes); what history still had when the client took the
            // subscription up again is replayed, in order, once.
            Assert.Equal(1, received[0]);
            Assert.Equal(received.Order(), received);
            Assert.Equal(received.Distinct(), received);
            Assert.DoesNotContain(2L, received);
            Assert.DoesNotContain(3L, received);
            Assert.Contains(8L, received);
            Assert.Equal(9, received[^1]);
        }

        lock (failures)
        {
            var failure = Assert.Single(failures);
            Assert.Equal(new PushPosition(first.Epoch, 1), failure.LastSeen);
        }
    }

    [Fact]
    public async Task EpochChangeOfAFollowedTopicIsReportedAndTheNewEpochArrivesFromItsFirstMessage()
    {
        var redis = Environment.GetEnvironmentVariable("ORLEANSPUSH_TEST_REDIS")
            ?? throw new InvalidOperationException("ORLEANSPUSH_TEST_REDIS is not set: run the tests with ./test.sh.");
        var prefix = "clientepoch" + Guid.NewGuid().ToString("N")[..8];
        using var multiplexer = await ConnectionMultiplexer.ConnectAsync(redis);
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Storage:Provider"] = "Redis",
            ["OrleansPush:Storage:Redis"] = redis,
            ["OrleansPush:Storage:Prefix"] = prefix,
            ["OrleansPush:Routing:Lease"] = "00:30:00",
            ["OrleansPush:Silo:IdleGrainTimeout"] = "01:00:00", // at least the lease
        });
        var cluster = gateway.Services.GetRequiredService<IClusterClient>();
        var topic = "epoch-" + Guid.NewGuid().ToString("N");
        var received = new List<PushMessage>();
        var failures = new List<RecoveryFailure>();
        await using var client = new PushClient(new PushClientOptions { Url = gateway.WebSocketUri() });
        client.RecoveryFailed += f => { lock (failures) { failures.Add(f); } };
        using var started = new CancellationTokenSource(Wait);
        await client.StartAsync(started.Token);
        await client.SubscribeAsync(topic, m => { lock (received) { received.Add(m); } }, started.Token);

        var old = await gateway.PublishAsync(topic, "\"old\"");
        await PushClientTests.Until(() => PushClientTests.Count(received) >= 1, "the first message");
        await HistoryLoss.ForceNewEpochAsync(multiplexer, prefix, cluster, topic);
        var grain = cluster.GetGrain<ITopicGrain>(topic);
        var renewed = await grain.PublishAsync(Encoding.UTF8.GetBytes("\"new1\""), null);
        await grain.PublishAsync(Encoding.UTF8.GetBytes("\"new2\""), null);
        Assert.NotEqual(old.Epoch, renewed.Epoch);
        using (var renew = new CancellationTokenSource(Wait))
        {
            await gateway.Services.GetRequiredService<TopicRouter>().RenewAsync(renew.Token);
        }

        await PushClientTests.Until(() => PushClientTests.Count(received) >= 3, "the new epoch");
        lock (received)
        {
            Assert.Equal([(old.Epoch, 1L), (renewed.Epoch, 1L), (renewed.Epoch, 2L)], received.Select(m => (m.Epoch, m.Seq)));
        }

        lock (failures)
        {
            var failure = Assert.Single(failures);
            Assert.Equal(new PushPosition(old.Epoch, 1), failure.LastSeen);
            Assert.Equal(renewed.Epoch, failure.Now.Epoch);
        }
    }
}
