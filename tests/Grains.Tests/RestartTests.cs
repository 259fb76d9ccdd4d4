using System.Text;
using Microsoft.Extensions.Configuration;
using Orleans.TestingHost;

namespace OrleansPush.Grains.Tests;

/// <summary>A whole cluster stopped and started again on a durable store (sealed with encryption at rest, or not) keeps
/// history with each message's bytes and kind (JSON or binary), epochs, user subscriptions and a user's token
/// revocation.</summary>
public sealed class RestartTests
{
    public static TheoryData<string> Providers => new() { "Redis", "Postgres", "Redis" + Encrypted, "Postgres" + Encrypted };

    private const string Encrypted = "+encrypted";

    /// <summary>Not UTF-8, with zero bytes, and one that reads as JSON: published as binary, both stay binary.</summary>
    private static readonly byte[][] Binary = [[0x00, 0xff, 0xc3, 0x28, 0x00], Encoding.UTF8.GetBytes("{\"i\":0}")];

    [Theory]
    [MemberData(nameof(Providers))]
    public async Task RestartedClusterKeepsHistoryEpochsUserSubscriptionsAndRevocations(string provider)
    {
        var prefix = "restart_" + Guid.NewGuid().ToString("N")[..8];
        var topic = "news-" + Guid.NewGuid().ToString("N");
        var user = "u" + Guid.NewGuid().ToString("N");
        TopicPosition last;
        long revokedBefore;

        var first = await StartAsync(provider, prefix);
        try
        {
            for (var i = 1; i <= 5; i++)
            {
                last = await first.Client.GetGrain<ITopicGrain>(topic).PublishAsync(Encoding.UTF8.GetBytes($"{{\"i\":{i}}}"), null);
            }

            foreach (var bytes in Binary)
            {
                await first.Client.GetGrain<ITopicGrain>(topic).PublishAsync(bytes, PayloadFormat.Binary, null);
            }

            await first.Client.GetGrain<IUserGrain>(user).SubscribeAsync("team:blue");
            await first.Client.GetGrain<IUserGrain>(user).SubscribeAsync("team:red");
            await first.Client.GetGrain<IUserGrain>(user).UnsubscribeAsync("team:red");
            revokedBefore = await first.Client.GetGrain<IUserGrain>(user).RevokeAsync();
            last = await first.Client.GetGrain<ITopicGrain>(topic).GetPositionAsync();
        }
        finally
        {
            await first.StopAllSilosAsync();
            await first.DisposeAsync();
        }

        var second = await StartAsync(provider, prefix);
        try
        {
            var grain = second.Client.GetGrain<ITopicGrain>(topic);
            Assert.Equal(last, await grain.GetPositionAsync());
            var history = await grain.ReadAsync(0, 100);
            Assert.Equal(Enumerable.Range(1, 5).Select(i => $"{{\"i\":{i}}}"), history.Messages.Take(5).Select(m => Encoding.UTF8.GetString(m.Data)));
            Assert.Equal(Binary.Select(Convert.ToHexString), history.Messages.Skip(5).Select(m => Convert.ToHexString(m.Data)));
            Assert.Equal(Enumerable.Repeat(PayloadFormat.Json, 5).Concat(Enumerable.Repeat(PayloadFormat.Binary, 2)), history.Messages.Select(m => m.Format));

            var next = await grain.PublishAsync(Encoding.UTF8.GetBytes("{\"i\":6}"), null);
            Assert.Equal(new TopicPosition(last.Epoch, 8), next);
            Assert.Equal(["team:blue"], await second.Client.GetGrain<IUserGrain>(user).GetSubscriptionsAsync());
            Assert.Equal(revokedBefore, await second.Client.GetGrain<IUserGrain>(user).GetRevokedBeforeAsync());
            Assert.Equal(revokedBefore, (await second.Client.GetGrain<IUserGrain>(user).SyncAsync("gw-after-restart")).RevokedBefore);
        }
        finally
        {
            await second.StopAllSilosAsync();
            await second.DisposeAsync();
        }
    }

    /// <summary>Retain (issue 13/15): a Retain topic's retained value, older than its head, and a KeepLatest topic whose
    /// latest value an empty retained publish cleared, both as they were after a whole cluster restart.</summary>
    [Theory]
    [MemberData(nameof(Providers))]
    public async Task RetainedValueAndAClearedLatestValueSurviveARestart(string provider)
    {
        var prefix = "retain_" + Guid.NewGuid().ToString("N")[..8];
        var retained = "retained:" + Guid.NewGuid().ToString("N");
        var state = "state:" + Guid.NewGuid().ToString("N");

        var first = await StartAsync(provider, prefix);
        try
        {
            var topic = first.Client.GetGrain<ITopicGrain>(retained);
            Assert.Equal(1, (await topic.PublishRetainedAsync([0x00, 0x01], PayloadFormat.Binary, null)).Seq);
            Assert.Equal(2, (await topic.PublishAsync(Encoding.UTF8.GetBytes("{\"plain\":2}"), null)).Seq);
            var keepLatest = first.Client.GetGrain<ITopicGrain>(state);
            await keepLatest.PublishAsync(Encoding.UTF8.GetBytes("{\"hp\":1}"), null);
            Assert.Single((await keepLatest.ReadLatestAsync()).Messages);
            Assert.Equal(1, (await keepLatest.PublishRetainedAsync([], PayloadFormat.Binary, null)).Seq); // clears; not published
            Assert.Empty((await keepLatest.ReadLatestAsync()).Messages);
        }
        finally
        {
            await first.StopAllSilosAsync();
            await first.DisposeAsync();
        }

        var second = await StartAsync(provider, prefix);
        try
        {
            var latest = await second.Client.GetGrain<ITopicGrain>(retained).ReadLatestAsync();
            Assert.Equal(2, latest.Head);
            var value = Assert.Single(latest.Messages);
            Assert.Equal((1L, PayloadFormat.Binary, "0001"), (value.Seq, value.Format, Convert.ToHexString(value.Data)));

            var cleared = await second.Client.GetGrain<ITopicGrain>(state).ReadLatestAsync();
            Assert.Equal(1, cleared.Head);
            Assert.Empty(cleared.Messages);
        }
        finally
        {
            await second.StopAllSilosAsync();
            await second.DisposeAsync();
        }
    }

    private static async Task<TestCluster> StartAsync(string provider, string prefix)
    {
        var builder = new TestClusterBuilder(1);
        builder.Options.ServiceId = prefix;
        builder.Properties["provider"] = provider;
        builder.Properties["prefix"] = prefix;
        builder.AddSiloBuilderConfigurator<StoreSilo>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    private sealed class StoreSilo : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            var properties = siloBuilder.Configuration;
            var encrypted = properties["provider"]!.EndsWith(Encrypted, StringComparison.Ordinal);
            var provider = properties["provider"]!.Replace(Encrypted, string.Empty, StringComparison.Ordinal);
            var settings = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["OrleansPush:Storage:Encryption:ActiveKey"] = encrypted ? "k1" : null,
                ["OrleansPush:Storage:Encryption:Keys:k1"] = encrypted ? Convert.ToBase64String(Encoding.UTF8.GetBytes("restart-tests-key-of-32-bytes-ok")) : null,
                ["OrleansPush:Storage:Provider"] = provider,
                ["OrleansPush:Storage:Redis"] = provider == "Redis" ? TestServers.Redis : null,
                ["OrleansPush:Storage:Postgres"] = provider == "Postgres" ? TestServers.Postgres : null,
                ["OrleansPush:Storage:Prefix"] = properties["prefix"],
                ["OrleansPush:Topics:Namespaces:retained:Retain"] = "true",
                ["OrleansPush:Topics:Namespaces:state:KeepLatest"] = "true",
            }).Build();
            siloBuilder.AddOrleansPushGrains(settings);
        }
    }
}
