using System.Collections.Concurrent;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Core.Internal;
using Orleans.Storage;
using Orleans.TestingHost;
using OrleansPush.Grains.History;

namespace OrleansPush.Grains.Tests;

/// <summary>
/// A one-silo test cluster whose topic grains write to a given history store through a <see cref="FaultyHistoryStore"/>,
/// so a test can inject faults around the real store and read the store behind the grain's back.
/// </summary>
public sealed class StoreSilo : IAsyncDisposable
{
    private const string StoreProperty = "storeUnderTest";
    private static readonly ConcurrentDictionary<string, FaultyHistoryStore> Stores = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, FaultyGrainStorage> StateStorages = new(StringComparer.Ordinal);
    private readonly string _id;

    private StoreSilo(string id, TestCluster cluster, FaultyHistoryStore store)
    {
        _id = id;
        Cluster = cluster;
        Store = store;
    }

    public TestCluster Cluster { get; }

    public IGrainFactory Grains => Cluster.Client;

    /// <summary>The store the silo's grains use; <see cref="FaultyHistoryStore.Inner"/> is the real one.</summary>
    public FaultyHistoryStore Store { get; }

    /// <summary>The grain storage of user state (<see cref="PushNames.StateStore"/>), around the real in-memory one.</summary>
    public FaultyGrainStorage StateStorage => StateStorages[_id];

    public static async Task<StoreSilo> StartAsync(IHistoryStore store, IReadOnlyDictionary<string, string?>? settings = null)
    {
        var id = Guid.NewGuid().ToString("N");
        var faulty = new FaultyHistoryStore(store);
        Stores[id] = faulty;
        var builder = new TestClusterBuilder(1);
        builder.Properties[StoreProperty] = id;
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            builder.Properties[key] = value;
        }

        builder.AddSiloBuilderConfigurator<Configurator>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new StoreSilo(id, cluster, faulty);
    }

    /// <summary>Deactivates a grain once it is idle; its next call activates it again from the store.</summary>
    public async Task DeactivateAsync(IAddressable grain)
    {
        await grain.AsReference<IGrainManagementExtension>().DeactivateOnIdle();
    }

    public async ValueTask DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
        Stores.TryRemove(_id, out _);
        StateStorages.TryRemove(_id, out _);
    }

    private sealed class Configurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            var store = Stores[siloBuilder.Configuration[StoreProperty]!];
            var settings = new Dictionary<string, string?>(ClusterFixture.Settings().AsEnumerable().ToDictionary(p => p.Key, p => p.Value));
            foreach (var (key, value) in siloBuilder.Configuration.AsEnumerable())
            {
                if (key.StartsWith("OrleansPush:", StringComparison.Ordinal))
                {
                    settings[key] = value;
                }
            }

            siloBuilder.AddOrleansPushGrains(new ConfigurationBuilder().AddInMemoryCollection(settings).Build());
            siloBuilder.Services.AddSingleton<IHistoryStore>(store);

            var id = siloBuilder.Configuration[StoreProperty]!;
            var real = siloBuilder.Services.Last(d => d.ServiceType == typeof(IGrainStorage) && Equals(d.ServiceKey, PushNames.StateStore));
            siloBuilder.Services.AddKeyedSingleton<IGrainStorage>(PushNames.StateStore, (sp, key) =>
                StateStorages.GetOrAdd(id, _ => new FaultyGrainStorage((IGrainStorage)real.KeyedImplementationFactory!(sp, key))));
        }
    }
}
