using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;
using OrleansPush.Grains.History;
using Xunit.Abstractions;

namespace OrleansPush.Gateway.Tests;

/// <summary>Issue 16: memory follows what is alive. Topics, users and connections come and go on an embedded node (real
/// Kestrel, real WebSocket clients) with short lifetimes; once what they created has expired, everything that counts them
/// is back where it started. Runs alone with the observability tests: it reads process-wide figures (open handles, the
/// managed heap, the connection gauges).</summary>
[Collection(ObservabilityCollection.Name)]
public sealed class ChurnSoakTests(ITestOutputHelper output)
{
    private const int Rounds = 12;
    private const int TopicsPerRound = 500;
    private const int ConnectionsPerRound = 16;

    /// <summary>Open handles that may differ from the start for reasons of their own (a pooled HTTP connection, a
    /// timer's file descriptor).</summary>
    private const int HandleSlack = 16;

    /// <summary>The managed heap after a full collection may be this much above the start: what is sized by the peak
    /// (pools, free lists and dictionaries that keep their largest capacity; about 2,700 topic grains were alive at
    /// once). Measured +3.4 MiB (21.7 → 25.1 MiB) once Orleans' location cache was bounded (it lapses after
    /// LocationCacheTtl here); before, +4.5 MiB. The churn creates about 6,000 topics, which at the 3-4 KB each they
    /// cost while alive would be some 20 MB.</summary>
    private const long HeapSlackBytes = 6 * 1024 * 1024;

    private static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Expiry = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task ChurnOfTopicsUsersAndConnectionsLeavesNothingBehindOnceExpired()
    {
        var life = Lifetime.ToString();
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:soak:HistoryTtl"] = life,
            ["OrleansPush:Topics:Namespaces:soak:PositionTtl"] = life,
            ["OrleansPush:Topics:Namespaces:soak:Wildcards"] = "true",
            ["OrleansPush:Topics:Namespaces:soakp:HistoryTtl"] = life,
            ["OrleansPush:Topics:Namespaces:soakp:PositionTtl"] = life,
            ["OrleansPush:Topics:Namespaces:soakp:Presence"] = "true",
            ["OrleansPush:Topics:Personal:HistoryTtl"] = life,
            ["OrleansPush:Topics:Personal:PositionTtl"] = life,
            ["OrleansPush:Topics:DedupeWindow"] = "00:00:02",
            ["OrleansPush:Routing:Lease"] = "00:00:02",
            ["OrleansPush:Silo:IdleGrainTimeout"] = "00:00:03",
            ["OrleansPush:Silo:LocationCacheTtl"] = life,
            ["OrleansPush:Gateway:EmptyTopicLinger"] = "00:00:01",
        });
        var run = Guid.NewGuid().ToString("N")[..8];

        // A small round first, so that what is created once per process (compiled code, pools, the namespace's
        // directory grain) is there at the start; then the start is taken once that round's grains are gone.
        await ChurnRoundAsync(gateway, run + "w", topics: 50, connections: 4);
        await WaitAsync(gateway, "the warm-up's grains to deactivate", c => c.Topics == 0 && c.Users == 0 && c.LocalTopics == 0 && c.LocalUsers == 0);
        var start = await CountAsync(gateway, fullGc: true);
        output.WriteLine($"start: {start}");
        var types = await gateway.Services.GetRequiredService<IClusterClient>().GetGrain<IManagementGrain>(0).GetSimpleGrainStatistics();
        output.WriteLine("grain types: " + string.Join(", ", types.Select(t => $"{t.GrainType}={t.ActivationCount}")));

        var churn = Stopwatch.StartNew();
        for (var round = 0; round < Rounds; round++)
        {
            await ChurnRoundAsync(gateway, $"{run}-{round}", TopicsPerRound, ConnectionsPerRound);
        }

        var peak = await CountAsync(gateway, fullGc: true);
        output.WriteLine($"after {Rounds * TopicsPerRound} topics and {Rounds * ConnectionsPerRound} connections in {churn.Elapsed.TotalSeconds:F1} s: {peak}");

        var expired = Stopwatch.StartNew();
        var end = await WaitAsync(gateway, "everything the churn created to expire", c =>
            c.Topics <= start.Topics && c.Users <= start.Users && c.Namespaces <= start.Namespaces
            && c.LocalTopics <= start.LocalTopics && c.LocalUsers <= start.LocalUsers
            && c.StoredTopics <= start.StoredTopics && c.DirectoryEntries <= start.DirectoryEntries
            && c.Connections == start.Connections && c.Subscriptions == start.Subscriptions
            && c.Handles <= start.Handles + HandleSlack, fullGc: false);
        end = await CountAsync(gateway, fullGc: true);
        output.WriteLine($"{expired.Elapsed.TotalSeconds:F1} s later: {end}");
        Assert.True(end.HeapBytes <= start.HeapBytes + HeapSlackBytes,
            $"the managed heap after a full collection grew from {start.HeapBytes:N0} to {end.HeapBytes:N0} bytes (bound: +{HeapSlackBytes:N0})");
    }

    /// <summary>One round: connections of new users subscribe to new topics (one with presence each), the round's topics
    /// are published to (with idempotency keys on some), each user gets a direct push, every connection receives what it
    /// subscribed to, in order, and then all of them close.</summary>
    private static async Task ChurnRoundAsync(TestGateway gateway, string round, int topics, int connections)
    {
        var names = Enumerable.Range(0, topics).Select(i => $"soak:{round}-{i}").ToArray();
        var clients = await Task.WhenAll(Enumerable.Range(0, connections).Select(c =>
            WsClient.ConnectAsync(gateway.WebSocketUri($"user=soak-{round}-{c}"))));
        try
        {
            await Task.WhenAll(clients.Select(async (client, c) =>
            {
                Assert.Equal("ok", (await client.SubscribeAsync(names[c % topics])).Op);
                Assert.Equal("ok", (await client.SubscribeAsync($"soakp:{round}-{c}")).Op);
            }));

            // Two messages per topic, the second with an idempotency key; 500 items per request.
            var items = names.SelectMany(t => new object[]
            {
                new { topic = t, data = new { n = 1 } },
                new { topic = t, data = new { n = 2 }, key = "k-" + t },
            }).ToArray();
            foreach (var chunk in items.Chunk(500))
            {
                using var body = new StringContent(JsonSerializer.Serialize(chunk), Encoding.UTF8, "application/json");
                using var response = await gateway.Http.PostAsync("/api/publish", body);
                Assert.True(response.IsSuccessStatusCode, $"batch publish answered {(int)response.StatusCode}");
            }

            for (var c = 0; c < connections; c++)
            {
                using var body = new StringContent("{\"direct\":true}", Encoding.UTF8, "application/json");
                using var response = await gateway.Http.PostAsync($"/api/users/soak-{round}-{c}", body);
                Assert.True(response.IsSuccessStatusCode, $"push to a user answered {(int)response.StatusCode}");
            }

            await Task.WhenAll(clients.Select(async (client, c) =>
            {
                var got = await client.MessagesAsync(3);
                var topicMessages = got.Where(m => m.Topic == names[c % topics]).Select(m => m.Seq).ToArray();
                Assert.Equal([1L, 2L], topicMessages);
                Assert.Single(got, m => m.Topic == TopicName.Personal($"soak-{round}-{c}"));
            }));
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }

    private async Task<Counts> WaitAsync(TestGateway gateway, string what, Func<Counts, bool> done, bool fullGc = false)
    {
        var deadline = DateTime.UtcNow + Expiry;
        var counts = await CountAsync(gateway, fullGc);
        while (!done(counts))
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited {Expiry.TotalSeconds} s for {what}; still {counts}");
            await Task.Delay(250);
            counts = await CountAsync(gateway, fullGc);
        }

        output.WriteLine($"{what}: {counts}");
        return counts;
    }

    private static async Task<Counts> CountAsync(TestGateway gateway, bool fullGc)
    {
        var cluster = gateway.Services.GetRequiredService<IClusterClient>();
        var stats = await cluster.GetGrain<IManagementGrain>(0).GetSimpleGrainStatistics();
        int Activations(string type) => stats.Where(s => s.GrainType.Contains("." + type, StringComparison.Ordinal)).Sum(s => s.ActivationCount);
        var directory = await cluster.GetGrain<INamespaceGrain>("soak").WatchPositionsAsync(gateway.Services.GetRequiredService<GatewayIdentity>().Id);
        var scrape = await ObservabilityTests.ScrapeAsync(gateway);
        var store = (MemoryHistoryStore)gateway.SiloServices!.GetRequiredService<IHistoryStore>();
        long heap = 0;
        if (fullGc)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            heap = GC.GetTotalMemory(forceFullCollection: true);
        }

        return new Counts(
            Topics: Activations("TopicGrain"),
            Users: Activations("UserGrain"),
            Namespaces: Activations("NamespaceGrain"),
            LocalTopics: gateway.Services.GetRequiredService<TopicRouter>().TopicCount,
            LocalUsers: gateway.Services.GetRequiredService<UserConnections>().UserCount,
            StoredTopics: store.TopicCount,
            DirectoryEntries: directory.Length,
            Connections: ObservabilityTests.Sample(scrape, "orleanspush_connections", ("transport", "ws")),
            Subscriptions: ObservabilityTests.Sample(scrape, "orleanspush_subscriptions"),
            Handles: Directory.GetFiles("/proc/self/fd").Length,
            HeapBytes: heap);
    }

    private sealed record Counts(int Topics, int Users, int Namespaces, int LocalTopics, int LocalUsers, int StoredTopics, int DirectoryEntries,
        double Connections, double Subscriptions, int Handles, long HeapBytes)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"topic grains {Topics}, user grains {Users}, namespace grains {Namespaces}, gateway topics {LocalTopics}, gateway users {LocalUsers}, stored topics {StoredTopics}, directory entries {DirectoryEntries}, ws connections {Connections}, subscriptions {Subscriptions}, handles {Handles}, heap {HeapBytes / 1024.0 / 1024.0:F1} MiB");
    }
}
